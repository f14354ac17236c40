//! The dashboard in a real headless Chromium: it renders every app, it updates live
//! through `/events` without a reload, and a screenshot of it.
//!
//! `--dump-dom` shows the first render. The live test and the screenshot drive Chromium
//! through the DevTools protocol on `--remote-debugging-pipe` (fd 3 in, fd 4 out,
//! NUL-separated JSON): `--virtual-time-budget` never ends while an EventSource is open,
//! and `--timeout` does not hold a dump past the load event.
//!
//! Chromium is installed with `apt-get install -y chromium` when missing (scripts/setup.sh
//! does it too); a test skips with a note only when that fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

fn chromium() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let find = || {
                ["chromium", "chromium-browser"].iter().find_map(|c| {
                    std::process::Command::new("sh")
                        .args(["-c", &format!("command -v {c}")])
                        .output()
                        .ok()
                        .filter(|o| o.status.success())
                        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
                })
            };
            if let Some(p) = find() {
                return Some(p);
            }
            eprintln!("chromium missing: trying apt-get install -y chromium");
            let _ = std::process::Command::new("apt-get")
                .args(["update", "-qq"])
                .stdin(Stdio::null())
                .status();
            let _ = std::process::Command::new("apt-get")
                .args(["install", "-y", "-q", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .status();
            find()
        })
        .clone()
}

macro_rules! chromium_or_skip {
    () => {
        match chromium() {
            Some(p) => p,
            None => {
                eprintln!("SKIPPED: chromium is not installed and could not be installed");
                return;
            }
        }
    };
}

const FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

/// Runs headless Chromium with `extra` flags on `url`; returns its stdout.
async fn run_chromium(bin: &Path, extra: &[String], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium finishes within 60 s")
        .unwrap();
    eprintln!("chromium took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn page_loads(srv: &Server) -> u64 {
    let m = get(srv.addr, "/metrics").await;
    m.body
        .lines()
        .find_map(|l| l.strip_prefix("twelve_dashboard_page_loads_total "))
        .unwrap()
        .parse()
        .unwrap()
}

fn app_badge(name: &str, status: &str) -> String {
    format!(
        "<div class=\"app s-{status}\" data-app=\"{name}\"><div class=\"head\"><span class=\"name\">{name}</span><span class=\"badge s-{status} app-status\">{status}</span>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_every_app_and_status() {
    let bin = chromium_or_skip!();
    let srv = Server::start(FakeSource::new()).await;
    let dom = run_chromium(&bin, &["--dump-dom".into()], &srv.url("/")).await;
    assert!(dom.contains(&app_badge("web", "active")), "{dom}");
    assert!(dom.contains(&app_badge("api", "blocked")), "{dom}");
    assert!(dom.contains("missing integrations: postgresql"));
    for unit in ["web/0", "web/1", "web/2", "api/0"] {
        assert!(
            dom.contains(&format!("<tr class=\"unit\" data-unit=\"{unit}\">")),
            "unit {unit} in {dom}"
        );
    }
    assert!(dom.contains("42.5 req/s"));
    assert!(dom.contains("href=\"http://web.localhost:8000/\""));
    assert!(dom.contains("<span class=\"mark leader\">leader</span>"));
    assert!(dom.contains("<span class=\"mark scheduler\">scheduler</span>"));
    // A renewal that keeps failing is on the page, with its error.
    assert!(
        dom.contains("<tr class=\"certificate\" data-host=\"shop.example.com\">"),
        "{dom}"
    );
    assert!(
        dom.contains("failing (3 attempts): new order: connection refused"),
        "{dom}"
    );
    assert!(dom.contains("2030-03-17 17:46:40 UTC"), "{dom}");
    assert_eq!(page_loads(&srv).await, 1);
    srv.stop().await;
}

/// Headless Chromium driven over `--remote-debugging-pipe`.
struct Cdp {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Cdp {
    async fn launch(bin: &Path, window: &str) -> Cdp {
        let profile = tempfile::tempdir().unwrap();
        // The shell moves our stdin/stdout pipes to fds 3/4, where Chromium expects them.
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg("exec 3<&0 4>&1 </dev/null >/dev/null; exec \"$@\"")
            .arg("sh")
            .arg(bin)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={window}"))
            .arg("--remote-debugging-pipe")
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let to = child.stdin.take().unwrap();
        let from = BufReader::new(child.stdout.take().unwrap());
        Cdp {
            child,
            to,
            from,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends one command and returns its `result` (events in between are dropped).
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).await.unwrap();
        self.to.flush().await.unwrap();
        tokio::time::timeout(DEADLINE, async {
            loop {
                let mut buf = Vec::new();
                let n = self.from.read_until(0, &mut buf).await.unwrap();
                assert!(n > 0, "chromium closed the pipe during {method}");
                buf.pop();
                let v: Value = serde_json::from_slice(&buf).unwrap();
                if v["id"] == json!(id) {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method}"))
    }

    /// Opens `url` in a new page; returns the session to talk to it.
    async fn open(&mut self, url: &str) -> String {
        let t = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .await;
        let s = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": t["targetId"], "flatten": true}),
            )
            .await;
        s["sessionId"].as_str().unwrap().to_string()
    }

    async fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` every 100 ms until it is `true`.
    async fn wait_for(&mut self, session: &str, expr: &str, within: Duration) {
        let until = Instant::now() + within;
        loop {
            if self.eval(session, expr).await == json!(true) {
                return;
            }
            let dom = self.eval(session, "document.body.innerText").await;
            assert!(
                Instant::now() < until,
                "{expr} never true; page text:\n{dom}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn close(mut self) {
        self.to.shutdown().await.ok();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// The text of an app's status badge, as the page shows it.
fn app_status_js(app: &str) -> String {
    format!("(document.querySelector('[data-app=\"{app}\"] .app-status') || {{}}).textContent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_updates_live_through_sse() {
    let bin = chromium_or_skip!();
    let src = FakeSource::new();
    let srv = Server::start(src.clone()).await;
    let mut cdp = Cdp::launch(&bin, "1280,800").await;
    let page = cdp.open(&srv.url("/")).await;
    let api = app_status_js("api");
    cdp.wait_for(&page, &format!("{api} === 'blocked'"), DEADLINE)
        .await;
    // The stream is up once the header says so; mark this document to see it stays.
    cdp.wait_for(
        &page,
        "document.getElementById('live-text').textContent === 'live'",
        DEADLINE,
    )
    .await;
    cdp.eval(&page, "window.__sameDocument = 42").await;

    src.set_app_status("api", "maintenance", "Preparing service for restart");
    let changed = Instant::now();
    cdp.wait_for(
        &page,
        &format!("{api} === 'maintenance'"),
        Duration::from_secs(5),
    )
    .await;
    eprintln!("the page showed the change after {:?}", changed.elapsed());
    let text = cdp.eval(&page, "document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(text.contains("Preparing service for restart"), "{text}");
    assert!(!text.contains("missing integrations"), "{text}");
    assert_eq!(
        cdp.eval(&page, &app_status_js("web")).await,
        json!("active")
    );
    assert_eq!(
        cdp.eval(&page, "window.__sameDocument").await,
        json!(42),
        "the same document: no reload"
    );
    assert_eq!(page_loads(&srv).await, 1, "updated without a reload");
    cdp.close().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_screenshot() {
    let bin = chromium_or_skip!();
    let src = FakeSource::new();
    *src.snapshot.lock().unwrap() = showcase();
    let srv = Server::start(src).await;
    let mut cdp = Cdp::launch(&bin, "1280,800").await;
    let page = cdp.open(&srv.url("/#unit=web/0")).await;
    cdp.wait_for(
        &page,
        "document.querySelectorAll('.app').length === 5 \
         && document.getElementById('logs').textContent.includes('app.css') \
         && document.getElementById('live-text').textContent === 'live'",
        DEADLINE,
    )
    .await;
    cdp.call(
        Some(&page),
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    let shot = cdp
        .call(
            Some(&page),
            "Page.captureScreenshot",
            json!({"format": "png"}),
        )
        .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    cdp.close().await;
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(bytes.len() > 20_000, "not blank: {} bytes", bytes.len());
    // TWELVE_WEB_SCREENSHOT=1 cargo test -p twelve-web --test chromium refreshes the docs.
    if std::env::var_os("TWELVE_WEB_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        std::fs::write(&docs, &bytes).unwrap();
        eprintln!("wrote {}", docs.display());
    }
    srv.stop().await;
}
