//! The public edge through the real CLI: a deployed Flask app on two domains, a
//! certificate made with openssl served over HTTPS (curl with --resolve, HTTP/1.1 and
//! HTTP/2), the base URL following the first domain, maintenance mode, the systemd unit
//! (`systemd-analyze verify`), and the machine coming back with only the controller
//! started.

mod common;
#[path = "../../twelve-ingress/tests/common/pki.rs"]
mod pki;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use pki::{make_ca, make_key, make_leaf_files, openssl};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);

/// A CA and a leaf for `names` (ECDSA P-256) in `dir`: ca.pem, leaf.pem, leaf.key.
fn make_pki(dir: &Path, names: &[&str]) {
    make_ca(dir);
    make_leaf_files(dir, "leaf", names, 2);
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
    assert_eq!(status["hosts"][0]["issuer"], "twelve test CA");
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

    // The power goes: every process of this home dies, no clean stop. Killed until none
    // is left (one may be starting a process while the others die).
    let pids = processes_of(t.home.path());
    assert!(pids.len() >= 3, "controller, ingress and a unit: {pids:?}");
    eventually("every process gone", LONG, || {
        let left = processes_of(t.home.path());
        for pid in &left {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        left.is_empty().then_some(())
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

/// Let's Encrypt's ACME test server (Debian's `pebble`, not twelve's Pebble) with its
/// fake DNS (`pebble-challtestsrv`, every name 127.0.0.1), stopped on drop.
struct TestCa {
    dir: tempfile::TempDir,
    children: Vec<std::process::Child>,
    pub directory: String,
    /// The root of the certificates pebble issues.
    pub root: std::path::PathBuf,
    /// The CA of pebble's own HTTPS (its directory).
    pub api_ca: std::path::PathBuf,
}

impl TestCa {
    /// Validity in seconds; HTTP-01 fetched for real from `http_port`, TLS-ALPN-01 from
    /// `tls_port`.
    fn start(http_port: u16, tls_port: u16, validity: u64) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_key(d, "api-ca.key");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "api-ca.key",
                "-subj",
                "/CN=pebble api CA",
                "-days",
                "2",
                "-out",
                "api-ca.pem",
            ],
        );
        make_key(d, "api.key");
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                "api.key",
                "-subj",
                "/CN=localhost",
                "-out",
                "api.csr",
            ],
        );
        std::fs::write(
            d.join("api.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "api.csr",
                "-CA",
                "api-ca.pem",
                "-CAkey",
                "api-ca.key",
                "-days",
                "2",
                "-extfile",
                "api.ext",
                "-out",
                "api.pem",
            ],
        );
        let (api, mgmt, dns) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": d.join("api.pem"),
            "privateKey": d.join("api.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        std::fs::write(d.join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(d.join(name)).unwrap();
        let dns_child = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns}"),
            ])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .stdout(log("dns.log"))
            .stderr(log("dns.err"))
            .spawn()
            .expect("pebble-challtestsrv (apt-get install pebble)");
        let ca_child = Command::new("pebble")
            .args(["-config"])
            .arg(d.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_ALWAYS_VALID", "0")
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble (apt-get install pebble)");
        let root = d.join("root.pem");
        let api_ca = d.join("api-ca.pem");
        let ca = TestCa {
            children: vec![dns_child, ca_child],
            directory: format!("https://127.0.0.1:{api}/dir"),
            root: root.clone(),
            api_ca: api_ca.clone(),
            dir,
        };
        eventually("pebble's root", Duration::from_secs(30), || {
            let out = Command::new("curl")
                .args(["-sSf", "--cacert"])
                .arg(&api_ca)
                .arg(format!("https://127.0.0.1:{mgmt}/roots/0"))
                .output()
                .ok()?;
            let pem = String::from_utf8(out.stdout).ok()?;
            pem.contains("BEGIN CERTIFICATE")
                .then(|| std::fs::write(&root, pem).unwrap())
        });
        ca
    }

    fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tls_status(t: &Twelve) -> Value {
    serde_json::from_str(&t.ok(&["tls", "status", "--format", "json"])).unwrap()
}

fn host_status<'v>(status: &'v Value, host: &str) -> &'v Value {
    status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .unwrap()
}

#[test]
fn acme_issues_renews_under_load_and_a_failing_ca_shows_while_the_old_certificate_serves() {
    let (mut t, https) = with_https();
    t.env.push(("TWELVE_ACME_CHECK".into(), "1".into()));
    t.env.push(("TWELVE_ACME_RETRY".into(), "2".into()));
    // 30 s certificates: renewed once 10 s are left.
    let mut ca = TestCa::start(t.ingress_port, https, 30);
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "web"]);
    t.ok(&["domain", "add", "web", "a.acme.test"]);
    t.ok(&["domain", "add", "web", "b.acme.test"]);

    let out = t.cmd(&[
        "tls",
        "acme",
        "--email",
        "admin@acme.test",
        "--directory",
        &ca.directory,
        "--ca-file",
        ca.api_ca.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}\npebble:\n{}",
        String::from_utf8_lossy(&out.stderr),
        ca.log()
    );
    assert!(
        stdout.contains("a.acme.test: certificate obtained"),
        "{stdout}"
    );
    assert!(
        stdout.contains("b.acme.test: certificate obtained"),
        "{stdout}"
    );
    // Pebble fetched the HTTP-01 answers from the ingress (PEBBLE_VA_ALWAYS_VALID=0).
    assert!(
        ca.log().contains("/.well-known/acme-challenge/"),
        "{}",
        ca.log()
    );

    for host in ["a.acme.test", "b.acme.test"] {
        let (code, version, _) = eventually("HTTPS with pebble's certificate", LONG, || {
            curl_https(https, host, "/", &ca.root, &["--http1.1"]).filter(|r| r.0 == 200)
        });
        assert_eq!((code, version.as_str()), (200, "1.1"));
        let (code, version, _) = curl_https(https, host, "/", &ca.root, &["--http2"]).unwrap();
        assert_eq!((code, version.as_str()), (200, "2"));
    }
    let head = raw_head(t.ingress_port, "a.acme.test", "/x");
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    let st = tls_status(&t);
    assert_eq!(host_status(&st, "a.acme.test")["source"], "acme");
    assert!(
        host_status(&st, "a.acme.test")["issuer"]
            .as_str()
            .unwrap()
            .contains("Pebble"),
        "{st}"
    );

    // The base URL moves to https (a rollout) before the load starts.
    let secure = format!("https://a.acme.test:{https}");
    eventually("FLASK_BASE_URL on https", LONG, || {
        let (_, _, body) = curl_https(https, "a.acme.test", "/env", &ca.root, &[])?;
        let env: Value = serde_json::from_str(&body).ok()?;
        (env["FLASK_BASE_URL"] == secure.as_str()).then_some(())
    });

    // Renewal under a bounded client loop: new connections each time (new handshakes).
    let first = host_status(&tls_status(&t), "a.acme.test")["not_after"]
        .as_i64()
        .unwrap();
    // Load besides: a client thread sending requests back to back, over HTTP/2.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, root) = (stop.clone(), ca.root.clone());
        std::thread::spawn(move || {
            let (mut ok, mut errors) = (0, vec![]);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match curl_https(https, "b.acme.test", "/", &root, &["--http2"]) {
                    Some((200, _, _)) => ok += 1,
                    other => errors.push(format!("{other:?}")),
                }
            }
            (ok, errors)
        })
    };
    let (mut ok, mut failed, mut errors) = (0, 0, vec![]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut renewed = false;
    while std::time::Instant::now() < deadline {
        match curl_https(https, "a.acme.test", "/", &ca.root, &[]) {
            Some((200, _, _)) => ok += 1,
            other => {
                failed += 1;
                errors.push(format!("{other:?}"));
            }
        }
        let now = host_status(&tls_status(&t), "a.acme.test")["not_after"]
            .as_i64()
            .unwrap();
        if now > first {
            renewed = true;
            // A few more requests on the new certificate.
            for _ in 0..5 {
                match curl_https(https, "a.acme.test", "/", &ca.root, &[]) {
                    Some((200, _, _)) => ok += 1,
                    other => {
                        failed += 1;
                        errors.push(format!("{other:?}"));
                    }
                }
            }
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (load_ok, load_errors) = load.join().unwrap();
    assert!(renewed, "no renewal within 60 s: {}", tls_status(&t));
    assert_eq!(failed, 0, "{ok} ok, {failed} failed: {errors:?}");
    assert!(ok > 5, "{ok} requests");
    assert!(
        load_errors.is_empty(),
        "{load_ok} ok, failed: {load_errors:?}"
    );
    assert!(load_ok > 5, "{load_ok} requests");

    // TLS-ALPN-01 only: a third domain is validated on the HTTPS listener (pebble's
    // tlsPort), and renewals go on that way.
    let out = t.cmd(&[
        "tls",
        "acme",
        "--email",
        "admin@acme.test",
        "--directory",
        &ca.directory,
        "--ca-file",
        ca.api_ca.to_str().unwrap(),
        "--challenge",
        "tls-alpn-01",
    ]);
    assert!(
        out.status.success(),
        "{}{}\npebble:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        ca.log()
    );
    t.ok(&["domain", "add", "web", "c.acme.test"]);
    let c = eventually("an ACME attempt for c.acme.test", LONG, || {
        let st = tls_status(&t);
        let c = host_status(&st, "c.acme.test").clone();
        (c["source"] == "acme" || c["last_error"].is_string()).then_some(c)
    });
    assert_eq!(c["source"], "acme", "{c}\npebble:\n{}", ca.log());
    let (code, _, _) = eventually("HTTPS for c.acme.test", LONG, || {
        curl_https(https, "c.acme.test", "/", &ca.root, &[]).filter(|r| r.0 == 200)
    });
    assert_eq!(code, 200);

    // The CA goes away: the next renewal fails, visibly, and the old certificate serves.
    ca.stop();
    let st = eventually("a failed renewal in tls status", LONG, || {
        let st = tls_status(&t);
        host_status(&st, "a.acme.test")["last_error"]
            .is_string()
            .then_some(st)
    });
    let a = host_status(&st, "a.acme.test");
    assert!(a["failures"].as_u64().unwrap() >= 1, "{a}");
    assert_eq!(a["valid"], true, "{a}");
    let (code, _, _) =
        curl_https(https, "a.acme.test", "/", &ca.root, &[]).expect("the old certificate serves");
    assert_eq!(code, 200);
    let status = t.ok(&["status"]);
    assert!(
        status.contains("tls a.acme.test: blocked: certificate renewal failing"),
        "{status}"
    );
    let text = t.ok(&["tls", "status"]);
    assert!(text.contains("FAILED"), "{text}");
    // The dashboard's state and /metrics show it too.
    let web = t.web_port();
    let cert = eventually("the failing renewal on the dashboard", LONG, || {
        let (_, body) = http_get(web, "/api/state")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let c = v["certificates"]
            .as_array()?
            .iter()
            .find(|c| c["host"] == "a.acme.test")?
            .clone();
        (c["renewal_failures"].as_u64()? >= 1).then_some(c)
    });
    assert_eq!(cert["source"], "acme", "{cert}");
    assert!(cert["last_error"].as_str().unwrap() != "", "{cert}");
    let (_, metrics) = http_get(web, "/metrics").unwrap();
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("twelve_certificate_renewal_failures{host=\"a.acme.test\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(!failures.ends_with(" 0"), "{failures}");
    assert!(
        metrics.contains("twelve_certificate_expiry_timestamp_seconds{host=\"a.acme.test\""),
        "{metrics}"
    );
}

#[test]
fn ingress_configure_moves_the_listeners_and_keeps_them() {
    let t = Twelve::new();
    let e = t.fails(&["ingress", "configure", "--http", "localhost:80"]);
    assert!(e.contains("give an IP address and port"), "{e}");
    t.ok(&["status"]);
    let answers = |port: u16| http_get_host(port, "/", "nothing.localhost").map(|r| r.0);
    eventually("the ingress on its first port", LONG, || {
        (answers(t.ingress_port) == Some(404)).then_some(())
    });
    let (http, https) = (free_port(), free_port());
    let pid = std::fs::read_to_string(t.home.path().join("ingress/ingress.pid")).unwrap();

    // HTTPS is added while clients keep coming on HTTP: none fails, the same ingress
    // serves both (no restart).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = {
        let (stop, port) = (stop.clone(), t.ingress_port);
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match answers(port) {
                    Some(404) => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let out = t.ok(&[
        "ingress",
        "configure",
        "--https",
        &format!("127.0.0.1:{https}"),
    ]);
    assert!(out.contains(&format!("https://127.0.0.1:{https}")), "{out}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", https)).is_ok());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = clients.join().unwrap();
    assert_eq!(failed, 0, "{ok} ok");
    assert!(ok > 5, "{ok} requests");

    let out = t.ok(&[
        "ingress",
        "configure",
        "--http",
        &format!("127.0.0.1:{http}"),
    ]);
    assert!(out.contains(&format!("http://127.0.0.1:{http}")), "{out}");
    assert_eq!(answers(http), Some(404));
    assert_eq!(answers(t.ingress_port), None, "the old port is closed");
    assert_eq!(
        std::fs::read_to_string(t.home.path().join("ingress/ingress.pid")).unwrap(),
        pid,
        "the ingress was restarted"
    );
    // A port that cannot be bound changes nothing.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let e = t.fails(&["ingress", "configure", "--http", &taken]);
    assert!(e.contains(&taken), "{e}");
    assert_eq!(answers(http), Some(404));
    // Persisted: a new controller keeps them.
    t.ok(&["controller", "stop"]);
    t.ok(&["status"]);
    assert_eq!(answers(http), Some(404));
    let edge: Value =
        serde_json::from_str(&std::fs::read_to_string(t.home.path().join("edge.json")).unwrap())
            .unwrap();
    assert_eq!(edge["listeners"]["http"], format!("127.0.0.1:{http}"));
}
