//! External endpoints against real servers: the Flask example stores an object in a real
//! S3-compatible server (moto), sends a mail to a real SMTP sink (aiosmtpd) and exports a
//! span to a real OTLP/HTTP receiver, whose trace id is the one in the `traceparent` the
//! ingress added. The servers come from a Python venv shared by every run under
//! `<repo>/.cache/pyservers`.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

/// The venv with moto and aiosmtpd, made once (under a lock) and reused.
fn servers_venv() -> PathBuf {
    let dir = repo().join(".cache/pyservers");
    std::fs::create_dir_all(&dir).unwrap();
    let venv = dir.join("venv");
    let ready = dir.join("venv.ready");
    if ready.exists() {
        return venv;
    }
    let lock = File::create(dir.join("venv.lock")).unwrap();
    lock.lock().unwrap();
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let st = Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(st.success(), "python3 -m venv failed");
        let out = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "moto[server]", "aiosmtpd"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip install moto[server] aiosmtpd failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ready, "").unwrap();
    }
    venv
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed when the test ends.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(cmd: &mut Command, port: u16, log: &Path) -> Server {
        let out = File::create(log).unwrap();
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut s = Server { child, port };
        eventually(&format!("{log:?} listening on {port}"), LONG, || {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!(
                    "{log:?} exited with {st}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            TcpStream::connect(("127.0.0.1", s.port)).ok()
        });
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const OTLP_RECEIVER: &str = r#"
import http.server, sys

OUT = sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        code = 404
        if self.path == "/v1/traces":
            with open(OUT, "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
            code = 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

/// Every span the receiver recorded, with its resource's `service.name`.
fn recorded_spans(file: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut spans = vec![];
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_string();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    spans.push((service.clone(), span.clone()));
                }
            }
        }
    }
    spans
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// GET through the ingress with a header of our own.
fn ingress_get_with(t: &Twelve, app: &str, path: &str, header: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", t.ingress_port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {app}.localhost:{}\r\n{header}\r\n\r\n",
        t.ingress_port
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// GET through the ingress until it answers 200; the body.
fn get_ok(t: &Twelve, app: &str, path: &str) -> String {
    eventually(&format!("200 from {path}"), LONG, || {
        via_ingress(t, app, path)
            .filter(|(code, _)| *code == 200)
            .map(|r| r.1)
    })
}

#[test]
fn s3_smtp_and_tracing_against_real_servers() {
    let t = Twelve::new();
    let venv = servers_venv();
    let home = t.home.path();

    let s3 = free_port();
    let _moto = Server::start(
        Command::new(venv.join("bin/python"))
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(s3.to_string()),
        s3,
        &home.join("moto.log"),
    );
    let smtp = free_port();
    let smtp_log = home.join("smtp.log");
    let _smtp = Server::start(
        Command::new(venv.join("bin/python"))
            .args(["-u", "-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{smtp}"))
            .args(["-c", "aiosmtpd.handlers.Debugging"]),
        smtp,
        &smtp_log,
    );
    let otlp = free_port();
    let spans_file = home.join("spans.jsonl");
    std::fs::write(home.join("otlp_receiver.py"), OTLP_RECEIVER).unwrap();
    let _otlp = Server::start(
        Command::new("/usr/bin/python3")
            .arg(home.join("otlp_receiver.py"))
            .arg(otlp.to_string())
            .arg(&spans_file),
        otlp,
        &home.join("otlp.log"),
    );

    let app = "probe";
    let src = t.example("flask");
    let charm = src.join("charm/charmcraft.yaml");
    let mut text = std::fs::read_to_string(&charm).unwrap();
    text.push_str("  s3:\n    interface: s3\n    optional: true\n  smtp:\n    interface: smtp\n    optional: true\n  tracing:\n    interface: tracing\n    optional: true\n");
    std::fs::write(&charm, text).unwrap();
    t.ok(&["deploy", src.to_str().unwrap(), app]);
    t.ok(&[
        "integrate",
        app,
        "s3",
        "--data",
        "access-key=test",
        "secret-key=test",
        "bucket=twelve-test",
        &format!("endpoint=http://127.0.0.1:{s3}"),
        "region=us-east-1",
    ]);
    t.ok(&[
        "integrate",
        app,
        "smtp",
        "--data",
        "host=127.0.0.1",
        &format!("port={smtp}"),
    ]);
    t.ok(&[
        "integrate",
        app,
        "tracing",
        "--data",
        &format!("endpoint=http://127.0.0.1:{otlp}"),
    ]);
    let unit = format!("{app}/0");
    eventually("all three endpoints in the env", LONG, || {
        t.try_port(&unit).and_then(try_app_env).filter(|e| {
            e.get("S3_BUCKET").is_some()
                && e.get("SMTP_HOST").is_some()
                && e.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        })
    });

    // S3: a bucket created, an object written and read back from moto.
    assert_eq!(get_ok(&t, app, "/s3?body=hello-s3"), "hello-s3");

    // SMTP: aiosmtpd's Debugging handler prints each message it received.
    get_ok(&t, app, "/mail?subject=twelve-smtp-probe");
    eventually("the mail at the SMTP sink", LONG, || {
        std::fs::read_to_string(&smtp_log)
            .ok()
            .filter(|s| s.contains("Subject: twelve-smtp-probe"))
    });

    // Tracing: the ingress adds a traceparent; the app's span carries its trace id.
    let trace_id = get_ok(&t, app, "/trace").trim().to_string();
    assert!(is_hex(&trace_id, 32), "not a trace id: {trace_id:?}");
    let (service, span) = eventually("the span at the OTLP receiver", LONG, || {
        recorded_spans(&spans_file)
            .into_iter()
            .find(|(_, s)| s["traceId"] == trace_id.as_str())
    });
    assert_eq!(service, app);
    assert_eq!(span["name"], "GET /trace");
    assert!(
        is_hex(span["spanId"].as_str().unwrap_or_default(), 16),
        "{span}"
    );
    assert!(
        is_hex(span["parentSpanId"].as_str().unwrap_or_default(), 16),
        "the ingress's span id is the parent: {span}"
    );

    // A traceparent the client sent is kept by the ingress.
    let mine = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let header = format!("traceparent: 00-{mine}-{parent}-01");
    let body = eventually("/trace with our traceparent", LONG, || {
        ingress_get_with(&t, app, "/trace", &header)
            .filter(|(code, _)| *code == 200)
            .map(|r| r.1)
    });
    assert_eq!(body.trim(), mine);
    let (_, span) = eventually("our trace at the OTLP receiver", LONG, || {
        recorded_spans(&spans_file)
            .into_iter()
            .find(|(_, s)| s["traceId"] == mine)
    });
    assert_eq!(span["parentSpanId"], parent);
}
