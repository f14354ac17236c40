//! `twelve pack --oci` as a user runs it: the Flask example becomes an OCI image archive;
//! two packs of the same input are the same bytes (same layer digests); `skopeo inspect`
//! reads its config; `umoci` unpacks it and `runc` runs it (host network namespace, no
//! cgroup path: this machine has hybrid cgroups) and the app answers 200 on its port as
//! `_daemon_`; `--push` puts it in a CNCF distribution registry (Debian's
//! `docker-registry`) on 127.0.0.1. The base layer is cached in `$TWELVE_CACHE/oci` (made
//! with mmdebstrap on the first run, about 2 minutes).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn twelve(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_twelve"))
        .args(args)
        .current_dir(examples())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

fn layers(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("layer "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

/// An HTTP GET's status code, or 0 when nothing answers.
fn status(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["kill", &self.0, "KILL"])
            .output();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let out = Command::new("runc").args(["delete", &self.0]).output();
            if out.map(|o| o.status.success()).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.0])
            .output();
    }
}

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pack_oci_builds_a_reproducible_image_that_runs_with_runc_and_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.oci.tar");
    let b = dir.path().join("b.oci.tar");
    let (code, out1, err) = twelve(&[
        "pack",
        "flask",
        "--oci",
        "-o",
        a.to_str().unwrap(),
        "--tag",
        "flask-example:1",
    ]);
    assert_eq!(code, 0, "{err}");
    let first = layers(&out1);
    assert_eq!(first.len(), 4, "base, dependencies, app, twelve: {out1}");

    // A registry on 127.0.0.1 for --push.
    let port = free_port();
    let config = dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("registry").display()
        ),
    )
    .unwrap();
    let _registry = Registry(
        Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry; scripts/setup.sh)"),
    );
    let start = Instant::now();
    while status(port, "/v2/").0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dest = format!("127.0.0.1:{port}/flask-example:1");
    let (code, out2, err) = twelve(&[
        "pack",
        "flask",
        "--oci",
        "-o",
        b.to_str().unwrap(),
        "--tag",
        "flask-example:1",
        "--push",
        &dest,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(layers(&out2), first, "the same input, the same layers");
    assert!(
        !out2.contains("base layer built"),
        "the base layer is cached: {out2}"
    );
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "the same bytes"
    );
    assert!(out2.contains(&format!("pushed to {dest}")), "{out2}");
    let pushed: Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ])))
    .unwrap();
    assert_eq!(pushed["Layers"].as_array().unwrap().len(), 4);
    assert_eq!(pushed["Layers"][1], first[1].as_str());

    // What `skopeo inspect` shows of the archive.
    let config: Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci-archive:{}:1", a.display()),
    ])))
    .unwrap();
    let c = &config["config"];
    assert_eq!(c["Entrypoint"][0], "/usr/local/bin/twelve");
    assert_eq!(c["Entrypoint"][1], "pebble");
    assert!(c["ExposedPorts"]["8000/tcp"].is_object(), "{c}");
    assert_eq!(
        c["Labels"]["org.opencontainers.image.title"],
        "flask-example"
    );
    assert_eq!(c["WorkingDir"], "/flask/app");

    // umoci unpacks it, runc runs it: pebble starts the rock's services as _daemon_.
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    sh(Command::new("tar")
        .arg("-xf")
        .arg(&a)
        .arg("-C")
        .arg(&layout));
    let bundle = dir.path().join("bundle");
    sh(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle));
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let namespaces: Vec<Value> = spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "network")
        .cloned()
        .collect();
    spec["linux"]["namespaces"] = namespaces.into();
    spec["linux"]["cgroupsPath"] = "".into();
    spec["process"]["terminal"] = false.into();
    // Pebble switches to _daemon_ for the services, as a container runtime lets it.
    for set in ["bounding", "effective", "permitted"] {
        for cap in ["CAP_SETUID", "CAP_SETGID"] {
            spec["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(cap.into());
        }
    }
    // The environment `twelve k8s render` gives the app (its ConfigMap), but the port.
    let app_port = free_port();
    let env = spec["process"]["env"].as_array_mut().unwrap();
    env.push("FLASK_GREETING=bonjour from runc".into());
    env.push(format!("GUNICORN_CMD_ARGS=--bind 0.0.0.0:{app_port}").into());
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let id = format!("twelve-test-{}", std::process::id());
    let _container = run_container(&bundle, dir.path(), &id);
    let (code, body) = wait_for_200(app_port, "/");
    let logs = std::fs::read_to_string(dir.path().join("runc.log")).unwrap_or_default();
    assert_eq!(code, 200, "{body}\n{logs}");
    assert!(
        body.ends_with("bonjour from runc from flask-example\n"),
        "{body}"
    );
    let (_, env) = status(app_port, "/env");
    assert!(
        env.contains("\"FLASK_GREETING\":\"bonjour from runc\""),
        "{env}"
    );
    // The statsd-exporter container of `k8s render` runs the rock's /bin/statsd_exporter
    // with statsd_exporter's flags: the image has one.
    let metrics = free_port();
    let exporter_log = std::fs::File::create(dir.path().join("exporter.log")).unwrap();
    sh(Command::new("runc")
        .stdout(exporter_log.try_clone().unwrap())
        .stderr(exporter_log)
        .args([
            "exec",
            "-d",
            &id,
            "/bin/statsd_exporter",
            "--statsd.mapping-config=/statsd-mapping.conf",
            &format!("--statsd.listen-udp=localhost:{}", free_port()),
            &format!("--web.listen-address=:{metrics}"),
        ]));
    let start = Instant::now();
    while status(metrics, "/metrics").0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no metrics from /bin/statsd_exporter: {}",
            std::fs::read_to_string(dir.path().join("exporter.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The app runs as _daemon_ (584792): its gunicorn (the one with this test's port),
    // seen from the host's /proc.
    let uids: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let ours = format!("GUNICORN_CMD_ARGS=--bind 0.0.0.0:{app_port}");
            (String::from_utf8_lossy(&cmd).contains("gunicorn")
                && String::from_utf8_lossy(&env).contains(&ours))
            .then_some(())?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
        })
        .collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|u| u == "584792"),
        "{uids:?}"
    );
}

/// Go: the static binary at the rock's /usr/local/bin/<name> on a minbase base (with
/// ca-certificates), run by `twelve pebble` as `_daemon_` under runc, with the worker and
/// scheduler services of the example's rockcraft.yaml.
#[test]
fn pack_oci_go_runs_the_static_binary_with_runc() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("go.oci.tar");
    let (code, out, err) = twelve(&[
        "pack",
        "go",
        "--oci",
        "-o",
        a.to_str().unwrap(),
        "--tag",
        "go-example:1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(layers(&out).len(), 4, "base, binary, app, twelve: {out}");
    let config: Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci-archive:{}:1", a.display()),
    ])))
    .unwrap();
    let c = &config["config"];
    assert_eq!(c["WorkingDir"], "/app");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c}");
    assert!(
        config["history"][1]["created_by"]
            .as_str()
            .unwrap()
            .contains("/usr/local/bin/go-example"),
        "{config}"
    );

    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    sh(Command::new("tar")
        .arg("-xf")
        .arg(&a)
        .arg("-C")
        .arg(&layout));
    let bundle = dir.path().join("bundle");
    sh(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle));
    // Pebble takes layer labels of three characters or more: not `go`.
    assert!(bundle
        .join("rootfs/var/lib/pebble/default/layers/001-go-framework.yaml")
        .is_file());
    // A static binary: no interpreter (dynamic loader) named in it.
    let bin = std::fs::read(bundle.join("rootfs/usr/local/bin/go-example")).unwrap();
    assert!(
        !bin.windows(b"ld-linux".len()).any(|w| w == b"ld-linux"),
        "the binary is static"
    );
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let namespaces: Vec<Value> = spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "network")
        .cloned()
        .collect();
    spec["linux"]["namespaces"] = namespaces.into();
    spec["linux"]["cgroupsPath"] = "".into();
    spec["process"]["terminal"] = false.into();
    for set in ["bounding", "effective", "permitted"] {
        for cap in ["CAP_SETUID", "CAP_SETGID"] {
            spec["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push(cap.into());
        }
    }
    let app_port = free_port();
    let env = spec["process"]["env"].as_array_mut().unwrap();
    env.push(format!("APP_PORT={app_port}").into());
    env.push("APP_GREETING=hallo from runc".into());
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let _container = run_container(
        &bundle,
        dir.path(),
        &format!("twelve-test-go-{}", std::process::id()),
    );
    let (code, body) = wait_for_200(app_port, "/env");
    let logs = std::fs::read_to_string(dir.path().join("runc.log")).unwrap_or_default();
    assert_eq!(code, 200, "{body}\n{logs}");
    assert!(
        body.contains("\"APP_GREETING\":\"hallo from runc\""),
        "{body}"
    );
    // The binary runs as _daemon_ (584792), seen from the host's /proc.
    let uids: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let ours = format!("APP_PORT={app_port}");
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            (exe.ends_with("go-example") && String::from_utf8_lossy(&env).contains(&ours))
                .then_some(())?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
        })
        .collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|u| u == "584792"),
        "{uids:?}"
    );
}

/// Runs the bundle detached with runc as container `id` (its output in `dir/runc.log`); the
/// guard deletes the container.
fn run_container(bundle: &Path, dir: &Path, id: &str) -> Container {
    let container = Container(id.to_string());
    let log = std::fs::File::create(dir.join("runc.log")).unwrap();
    let run = Command::new("runc")
        .args(["run", "-d", id])
        .current_dir(bundle)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert!(run.success(), "runc run failed");
    container
}

/// Requests `path` until it answers 200 (at most 30 s); the last answer.
fn wait_for_200(port: u16, path: &str) -> (u16, String) {
    let start = Instant::now();
    loop {
        let r = status(port, path);
        if r.0 == 200 || start.elapsed() > Duration::from_secs(30) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
