//! The public edge through the real CLI: a deployed Flask app on two domains, a
//! certificate made with openssl served over HTTPS (curl with --resolve, HTTP/1.1 and
//! HTTP/2), the base URL following the first domain, maintenance mode, the systemd unit
//! (`systemd-analyze verify`), and the machine coming back with only the controller
//! started.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a leaf for `names` (ECDSA P-256) in `dir`: ca.pem, leaf.pem, leaf.key.
fn make_pki(dir: &Path, names: &[&str]) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=edge test CA",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "leaf.key",
        ],
    );
    openssl(
        dir,
        &[
            "req", "-new", "-key", "leaf.key", "-subj", "/CN=leaf", "-out", "leaf.csr",
        ],
    );
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join("leaf.ext"),
        format!("subjectAltName={}\n", sans.join(",")),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "2",
            "-extfile", "leaf.ext", "-out", "leaf.pem",
        ],
    );
}

/// curl https://HOST:PORT/PATH resolved to 127.0.0.1, trusting `ca`: (status, HTTP version, body).
fn curl_https(
    port: u16,
    host: &str,
    path: &str,
    ca: &Path,
    extra: &[&str],
) -> Option<(u16, String, String)> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &format!("{host}:{port}:127.0.0.1"),
            "--cacert",
        ])
        .arg(ca)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n')?;
    let (code, version) = last.split_once(' ')?;
    Some((code.parse().ok()?, version.to_string(), body.to_string()))
}

fn raw_head(port: u16, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}

fn with_https() -> (Twelve, u16) {
    let mut t = Twelve::new();
    let https = free_port();
    t.env
        .push(("TWELVE_INGRESS_HTTPS".into(), format!("127.0.0.1:{https}")));
    (t, https)
}

#[test]
fn domains_certificates_base_url_and_maintenance() {
    let (t, https) = with_https();
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path(), &["shop.example", "www.shop.example"]);
    let ca = pki.path().join("ca.pem");
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "shop"]);
    eventually("shop through the ingress", LONG, || {
        via_ingress(&t, "shop", "/").filter(|r| r.0 == 200)
    });

    // Bad input: one clear error each.
    let e = t.fails(&["domain", "add", "nope", "shop.example"]);
    assert!(e.contains("nope"), "{e}");
    let e = t.fails(&["domain", "add", "shop", "shop.example:8080"]);
    assert!(e.contains("invalid domain"), "{e}");

    t.ok(&["domain", "add", "shop", "shop.example"]);
    t.ok(&["domain", "add", "shop", "www.shop.example", "--hsts"]);
    let list: Value =
        serde_json::from_str(&t.ok(&["domain", "list", "shop", "--format", "json"])).unwrap();
    let hosts: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["shop.example", "www.shop.example"]);

    // The domain routes with the path unchanged; <app>.localhost keeps working; the base
    // URL follows the first domain once the rollout is done.
    let port = t.ingress_port;
    let base = format!("http://shop.example:{port}");
    eventually("FLASK_BASE_URL on the first domain", LONG, || {
        let (code, body) = http_get_host(port, "/env", &format!("shop.example:{port}"))?;
        let env: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && env["FLASK_BASE_URL"] == base.as_str()).then_some(())
    });
    assert_eq!(via_ingress(&t, "shop", "/").map(|r| r.0), Some(200));

    // A user's certificate: HTTPS verifies against its CA over HTTP/1.1 and HTTP/2, and
    // plain HTTP to the domain redirects.
    let e = t.fails(&[
        "tls",
        "cert",
        "other.example",
        "--cert",
        pki.path().join("leaf.pem").to_str().unwrap(),
        "--key",
        pki.path().join("leaf.key").to_str().unwrap(),
    ]);
    assert!(e.contains("does not name other.example"), "{e}");
    t.ok(&[
        "tls",
        "cert",
        "shop.example",
        "--cert",
        pki.path().join("leaf.pem").to_str().unwrap(),
        "--key",
        pki.path().join("leaf.key").to_str().unwrap(),
    ]);
    let (code, version, _) = eventually("HTTPS on shop.example", LONG, || {
        curl_https(https, "shop.example", "/", &ca, &["--http1.1"])
    });
    assert_eq!((code, version.as_str()), (200, "1.1"));
    let (code, version, _) = curl_https(https, "www.shop.example", "/", &ca, &["--http2"]).unwrap();
    assert_eq!((code, version.as_str()), (200, "2"));
    let head = raw_head(port, "shop.example", "/a?b=1");
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    assert!(
        head.contains(&format!("location: https://shop.example:{https}/a?b=1")),
        "{head}"
    );
    let status: Value =
        serde_json::from_str(&t.ok(&["tls", "status", "--format", "json"])).unwrap();
    assert_eq!(status["hosts"][0]["source"], "user");
    assert_eq!(status["hosts"][0]["issuer"], "edge test CA");
    assert_eq!(status["hosts"][0]["valid"], true);
    // The key is sealed at rest.
    let edge = std::fs::read_to_string(t.home.path().join("edge.json")).unwrap();
    assert!(
        !edge.contains("PRIVATE KEY"),
        "a private key in clear in edge.json"
    );
    let secure = format!("https://shop.example:{https}");
    eventually("FLASK_BASE_URL on https", LONG, || {
        let (_, _, body) = curl_https(https, "shop.example", "/env", &ca, &[])?;
        let env: Value = serde_json::from_str(&body).ok()?;
        (env["FLASK_BASE_URL"] == secure.as_str()).then_some(())
    });

    // Maintenance: 503 with Retry-After, units keep running.
    t.ok(&["maintenance", "on", "shop", "--message", "Back at noon."]);
    let head = raw_head(port, "shop.localhost", "/");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.contains("retry-after: 60") && head.contains("Back at noon."),
        "{head}"
    );
    assert_eq!(t.status("shop")["units"][0]["status"], "active");
    t.ok(&["maintenance", "off", "shop"]);
    assert_eq!(via_ingress(&t, "shop", "/").map(|r| r.0), Some(200));

    t.ok(&["domain", "remove", "shop", "www.shop.example"]);
    let e = t.fails(&["domain", "remove", "shop", "www.shop.example"]);
    assert!(e.contains("not a domain of shop"), "{e}");
}

#[test]
fn controller_install_writes_a_unit_systemd_accepts() {
    let t = Twelve::new();
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("twelve-controller.service");
    t.ok(&[
        "controller",
        "install",
        "--unit-file",
        unit.to_str().unwrap(),
        "--no-enable",
    ]);
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("controller run"), "{text}");
    assert!(text.contains("KillMode=process"), "{text}");
    assert!(
        text.contains(&format!("TWELVE_HOME={}", t.home.path().display())),
        "{text}"
    );
    // This machine does not run systemd as PID 1: `verify` checks the file offline.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(!stderr.contains("twelve-controller.service:"), "{stderr}");
    if !Path::new("/run/systemd/system").is_dir() {
        let e = t.fails(&[
            "controller",
            "install",
            "--unit-file",
            unit.to_str().unwrap(),
        ]);
        assert!(e.contains("systemd is not running"), "{e}");
    }
    t.ok(&[
        "controller",
        "uninstall",
        "--unit-file",
        unit.to_str().unwrap(),
    ]);
    assert!(!unit.exists());
}

/// Every process whose command line, working directory or executable is under `home`.
fn processes_of(home: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let home = home.to_string_lossy().into_owned();
    let mut pids = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&home)
            || cwd.to_string_lossy().starts_with(&home)
            || String::from_utf8_lossy(&environ).contains(&format!("TWELVE_HOME={home}"));
        if ours {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn the_machine_comes_back_with_only_the_controller_started() {
    let (t, https) = with_https();
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path(), &["back.example"]);
    let ca = pki.path().join("ca.pem");
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "back"]);
    t.ok(&["domain", "add", "back", "back.example"]);
    t.ok(&[
        "tls",
        "cert",
        "back.example",
        "--cert",
        pki.path().join("leaf.pem").to_str().unwrap(),
        "--key",
        pki.path().join("leaf.key").to_str().unwrap(),
    ]);
    eventually("HTTPS before", LONG, || {
        curl_https(https, "back.example", "/", &ca, &[]).filter(|r| r.0 == 200)
    });

    // The power goes: every process of this home dies at once, no clean stop.
    let pids = processes_of(t.home.path());
    assert!(pids.len() >= 3, "controller, ingress and a unit: {pids:?}");
    for pid in &pids {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    eventually("every process gone", LONG, || {
        processes_of(t.home.path()).is_empty().then_some(())
    });
    assert!(curl_https(https, "back.example", "/", &ca, &[]).is_none());

    // Only the controller starts (any command starts it); no redeploy.
    t.ok(&["status"]);
    let (code, _, body) = eventually("HTTPS after", LONG, || {
        curl_https(https, "back.example", "/", &ca, &[]).filter(|r| r.0 == 200)
    });
    assert_eq!(code, 200, "{body}");
    eventually("back.localhost after", LONG, || {
        via_ingress(&t, "back", "/").filter(|r| r.0 == 200)
    });
}
