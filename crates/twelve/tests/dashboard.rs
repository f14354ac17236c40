//! The dashboard of a real controller with real apps, in headless Chromium (installed by
//! scripts/setup.sh): it shows every app and its status, and a status change shows up on
//! the open page, through `/events`, without a reload.
//!
//! Chromium is driven as in twelve-web's tests, through the DevTools protocol on
//! `--remote-debugging-pipe` (fd 3 in, fd 4 out, NUL-separated JSON), since an open
//! EventSource keeps `--dump-dom` from ever finishing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const LONG: Duration = Duration::from_secs(90);

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

/// Headless Chromium over `--remote-debugging-pipe`; killed when dropped.
struct Cdp {
    child: Child,
    to: Option<ChildStdin>,
    from: Receiver<Value>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Cdp {
    fn launch() -> Cdp {
        Cdp::launch_with(&[])
    }

    /// With more Chromium flags.
    fn launch_with(extra: &[&str]) -> Cdp {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: scripts/setup.sh installs it (apt-get install -y chromium)"
        );
        let profile = tempfile::tempdir().unwrap();
        // The shell moves our stdin/stdout pipes to fds 3/4, where Chromium expects them.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec 3<&0 4>&1 </dev/null >/dev/null; exec \"$@\"")
            .arg("sh")
            .arg(CHROMIUM)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--window-size=1280,800")
            .args(extra)
            .arg("--remote-debugging-pipe")
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let to = child.stdin.take();
        let mut from = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = channel();
        std::thread::spawn(move || loop {
            let mut buf = Vec::new();
            match from.read_until(0, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    buf.pop();
                    if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Cdp {
            child,
            to,
            from: rx,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends one command and returns its `result` (events in between are dropped).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        let to = self.to.as_mut().unwrap();
        to.write_all(&bytes).unwrap();
        to.flush().unwrap();
        let until = Instant::now() + LONG;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(v) if v["id"] == json!(id) => {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no answer to {method}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("chromium closed the pipe during {method}")
                }
            }
        }
    }

    /// Opens `url` in a new page; returns the session to talk to it.
    fn open(&mut self, url: &str) -> String {
        let t = self.call(None, "Target.createTarget", json!({"url": url}));
        let s = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": t["targetId"], "flatten": true}),
        );
        s["sessionId"].as_str().unwrap().to_string()
    }

    fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` every 200 ms until it is `true`.
    fn wait_for(&mut self, session: &str, expr: &str, within: Duration) {
        let until = Instant::now() + within;
        loop {
            if self.eval(session, expr) == json!(true) {
                return;
            }
            if Instant::now() > until {
                let text = self.eval(session, "document.body && document.body.innerText");
                panic!(
                    "{expr} never true; page text:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        // Closing the pipe makes Chromium exit with its helpers; kill it if it does not.
        drop(self.to.take());
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of an app's status badge, as the page shows it.
fn app_status_js(app: &str) -> String {
    format!("(document.querySelector('[data-app=\"{app}\"] .app-status') || {{}}).textContent")
}

fn page_loads(t: &Twelve) -> u64 {
    let (_, m) = http_get(t.web_port(), "/metrics").unwrap();
    m.lines()
        .find_map(|l| l.strip_prefix("twelve_dashboard_page_loads_total "))
        .unwrap_or_else(|| panic!("no page-load counter in\n{m}"))
        .parse()
        .unwrap()
}

#[test]
fn dashboard_shows_real_apps_and_a_status_change_without_reload() {
    let t = Twelve::new().with_fixed_web_addr();
    // "web" runs; "gated" has a required option unset, so it is blocked.
    let web = t.example("go");
    let out = t.ok(&["deploy", web.to_str().unwrap(), "web", "-n", "2"]);
    assert!(out.contains("web is active"), "{out}");
    let gated = t.home.path().join("src/gated");
    copy_dir(&web, &gated);
    let charm = gated.join("charm/charmcraft.yaml");
    let text = std::fs::read_to_string(&charm).unwrap();
    let required = text.replace(
        "      description: An optional token (exported as APP_TOKEN when set).\n      type: string\n",
        "      description: A required token.\n      type: string\n      optional: false\n",
    );
    assert_ne!(text, required, "the go example's token option changed");
    std::fs::write(&charm, required).unwrap();
    let out = t.ok(&["deploy", gated.to_str().unwrap(), "gated"]);
    assert!(
        out.contains("gated: blocked: missing options: token"),
        "{out}"
    );

    let url = t.ok(&["dashboard"]).trim().to_string();
    assert_eq!(url, format!("http://{}/", t.web_addr()));
    let loads_before = page_loads(&t);

    let mut cdp = Cdp::launch();
    let page = cdp.open(&url);
    let (web_status, gated_status) = (app_status_js("web"), app_status_js("gated"));
    cdp.wait_for(
        &page,
        &format!(
            "{web_status} === 'active' && {gated_status} === 'blocked' \
             && document.getElementById('live-text').textContent === 'live'"
        ),
        LONG,
    );
    let text = cdp.eval(&page, "document.body.innerText");
    let text = text.as_str().unwrap();
    assert!(text.contains("missing options: token"), "{text}");
    for unit in ["web/0", "web/1", "gated/0"] {
        assert_eq!(
            cdp.eval(
                &page,
                &format!("!!document.querySelector('tr.unit[data-unit=\"{unit}\"]')")
            ),
            json!(true),
            "unit {unit} on the page:\n{text}"
        );
    }
    assert_eq!(
        cdp.eval(&page, "document.querySelectorAll('.app').length"),
        json!(2),
        "{text}"
    );
    // Mark this document to see it is still the same one after the change.
    cdp.eval(&page, "window.__sameDocument = 42");

    // Give the option: twelve starts the unit and the app turns active on the open page.
    t.ok(&["config", "gated", "token=now"]);
    let changed = Instant::now();
    cdp.wait_for(&page, &format!("{gated_status} === 'active'"), LONG);
    eprintln!(
        "the page showed gated active {:?} after `twelve config`",
        changed.elapsed()
    );
    let text = cdp.eval(&page, "document.body.innerText");
    let text = text.as_str().unwrap();
    assert!(!text.contains("missing options"), "{text}");
    assert_eq!(cdp.eval(&page, &web_status), json!("active"));
    assert_eq!(
        cdp.eval(&page, "window.__sameDocument"),
        json!(42),
        "the same document: no reload"
    );
    // (At most: a controller restarted by a rebuilt binary starts counting from 0.)
    let loads = page_loads(&t);
    assert!(
        loads <= loads_before + 1,
        "{loads} page loads after {loads_before}: the change came with a reload"
    );

    // Removing an app takes it off the open page too.
    t.ok(&["remove-application", "web"]);
    cdp.wait_for(
        &page,
        "!document.querySelector('[data-app=\"web\"]') \
         && !!document.querySelector('[data-app=\"gated\"]')",
        LONG,
    );
    assert_eq!(cdp.eval(&page, "window.__sameDocument"), json!(42));
}

/// One HTTP/1.1 GET with the header lines `head`: the status and the head of the answer.
fn get_with(port: u16, path: &str, head: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n{head}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split(' ').nth(1).unwrap().parse().unwrap();
    (code, text)
}

/// Every file under `dir`, recursively (symlinks not followed).
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            files_under(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

#[test]
fn only_localhost_without_the_token_and_the_token_is_never_logged() {
    use std::os::unix::fs::PermissionsExt;
    let t = Twelve::new();
    let plain = t.ok(&["dashboard"]).trim().to_string();
    let addr = t.web_addr();
    assert_eq!(plain, format!("http://{addr}/"));
    let url = t.ok(&["dashboard", "--token"]).trim().to_string();
    let (base, token) = url.split_once("?token=").expect("a URL with ?token=");
    assert_eq!(base, plain);
    let file = t.home.path().join("web-token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "web-token is {mode:o}");
    assert!(token.len() >= 43, "{token}");

    let port = t.web_port();
    // A page of another site rebound to 127.0.0.1 is refused; loopback names are served.
    for path in ["/", "/api/state", "/sd", "/metrics"] {
        let (code, _) = get_with(port, path, "Host: evil.example\r\n");
        assert_eq!(code, 403, "{path} for evil.example");
        let (code, _) = get_with(port, path, &format!("Host: evil.example:{port}\r\n"));
        assert_eq!(code, 403, "{path} for evil.example:{port}");
        for host in [
            "localhost".to_string(),
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
        ] {
            let (code, _) = get_with(port, path, &format!("Host: {host}\r\n"));
            assert_eq!(code, 200, "{path} for {host}");
        }
        // With the token, any name.
        let (code, _) = get_with(
            port,
            path,
            &format!("Host: evil.example\r\nAuthorization: Bearer {token}\r\n"),
        );
        assert_eq!(code, 200, "{path} with the token");
    }
    let (code, head) = get_with(port, &format!("/?token={token}"), "Host: dash.example\r\n");
    assert_eq!(code, 303, "{head}");
    assert!(
        head.contains("HttpOnly") && head.contains("SameSite=Strict"),
        "{head}"
    );
    // The CLI's own requests still work.
    let out = t.ok(&["metrics", "sd"]);
    assert!(out.trim_start().starts_with('['), "{out}");

    // In a browser under another name: the token URL opens the live page (its /events
    // and /api/logs go with the cookie) and leaves no token in the address bar; the same
    // name without the token is refused.
    let mut cdp = Cdp::launch_with(&["--host-resolver-rules=MAP dash.example 127.0.0.1"]);
    let page = cdp.open(&format!("http://dash.example:{port}/?token={token}"));
    cdp.wait_for(
        &page,
        "document.getElementById('live-text') \
         && document.getElementById('live-text').textContent === 'live' \
         && location.search === ''",
        LONG,
    );
    drop(cdp);
    let mut cdp = Cdp::launch_with(&["--host-resolver-rules=MAP dash.example 127.0.0.1"]);
    let page = cdp.open(&format!("http://dash.example:{port}/"));
    cdp.wait_for(
        &page,
        "!!document.body && document.body.innerText.includes('403 Forbidden')",
        LONG,
    );
    drop(cdp);

    // The token is in its file and nowhere else under TWELVE_HOME (logs included).
    let mut files = vec![];
    files_under(t.home.path(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("controller.log")));
    for f in files.iter().filter(|f| **f != file) {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token is in {}",
            f.display()
        );
    }
}
