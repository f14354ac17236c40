//! A fake [`Source`] with two apps, a server on 127.0.0.1:0 and a raw HTTP client.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use twelve_web::{
    AppView, BoxFuture, ControllerMetrics, LogLine, Snapshot, Source, TargetGroup, UnitView,
};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub const INGRESS_TEXT: &str = "# HELP twelve_ingress_requests_total Requests.\n\
# TYPE twelve_ingress_requests_total counter\n\
twelve_ingress_requests_total{app=\"web\",code=\"200\"} 1234\n";

#[derive(Default)]
pub struct FakeSource {
    pub snapshot: Mutex<Snapshot>,
    pub logs: Mutex<BTreeMap<String, Vec<LogLine>>>,
}

impl FakeSource {
    pub fn new() -> Arc<FakeSource> {
        Arc::new(FakeSource {
            snapshot: Mutex::new(two_apps()),
            logs: Mutex::new(fake_logs()),
        })
    }

    pub fn set_app_status(&self, app: &str, status: &str, message: &str) {
        let mut s = self.snapshot.lock().unwrap();
        let a = s.apps.iter_mut().find(|a| a.name == app).unwrap();
        a.status = status.into();
        a.message = message.into();
        for u in &mut a.units {
            u.status = status.into();
            u.message = message.into();
        }
    }
}

impl Source for FakeSource {
    fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().unwrap().clone()
    }

    fn logs(&self, unit: &str, n: usize) -> BoxFuture<Vec<LogLine>> {
        let lines = self
            .logs
            .lock()
            .unwrap()
            .get(unit)
            .cloned()
            .unwrap_or_default();
        let skip = lines.len().saturating_sub(n);
        Box::pin(async move { lines.into_iter().skip(skip).collect() })
    }
}

/// The scrape groups the controller would compute: one per unit and job.
fn group(
    app: &str,
    unit: &str,
    framework: &str,
    job: &str,
    target: &str,
    path: &str,
) -> TargetGroup {
    let labels = [
        ("app", app),
        ("unit", unit),
        ("release", "7"),
        ("framework", framework),
        ("job", job),
        ("__metrics_path__", path),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    TargetGroup {
        targets: vec![target.into()],
        labels,
    }
}

fn unit(name: &str, status: &str, addr: &str, leader: bool, restarts: u64) -> UnitView {
    UnitView {
        name: name.into(),
        status: status.into(),
        message: String::new(),
        address: addr.into(),
        leader,
        scheduler: leader,
        restarts,
    }
}

/// `web` (flask, 3 units, active) and `api` (fastapi, 1 unit, blocked).
pub fn two_apps() -> Snapshot {
    let mut web_scrape = Vec::new();
    for i in 0..3 {
        web_scrape.push(group(
            "web",
            &format!("web/{i}"),
            "flask",
            "web",
            &format!("127.0.0.1:{}", 20100 + i),
            "/metrics",
        ));
    }
    let mut sched = group(
        "web",
        "web/0",
        "flask",
        "celery",
        "127.0.0.1:20200",
        "/stats",
    );
    sched.labels.insert("role".into(), "scheduler".into());
    web_scrape.push(sched);
    Snapshot {
        apps: vec![
            AppView {
                name: "web".into(),
                framework: "flask".into(),
                status: "active".into(),
                message: String::new(),
                url: Some("http://web.localhost:8000/".into()),
                release: Some(7),
                units: vec![
                    unit("web/0", "active", "127.0.0.1:20000", true, 0),
                    unit("web/1", "active", "127.0.0.1:20001", false, 2),
                    unit("web/2", "active", "127.0.0.1:20002", false, 0),
                ],
                relations: vec!["postgresql".into(), "redis".into()],
                scrape: web_scrape,
                requests_per_second: Some(42.5),
            },
            AppView {
                name: "api".into(),
                framework: "fastapi".into(),
                status: "blocked".into(),
                message: "missing integrations: postgresql".into(),
                url: Some("http://api.localhost:8000/".into()),
                release: Some(3),
                units: vec![UnitView {
                    message: "missing integrations: postgresql".into(),
                    ..unit("api/0", "blocked", "127.0.0.1:20010", true, 5)
                }],
                relations: vec![],
                scrape: vec![group(
                    "api",
                    "api/0",
                    "fastapi",
                    "api",
                    "127.0.0.1:20011",
                    "/metrics",
                )],
                requests_per_second: None,
            },
        ],
        controller: ControllerMetrics {
            reconcile_seconds_last: 0.25,
            reconcile_seconds_sum: 12.5,
            reconciles_total: 50,
            migrations_total: 4,
            migration_failures_total: 1,
        },
        ingress_metrics: Some(INGRESS_TEXT.into()),
        services: vec![],
        certificates: vec![
            twelve_web::CertificateView {
                host: "shop.example.com".into(),
                app: "web".into(),
                source: "acme".into(),
                issuer: "Pebble Intermediate CA".into(),
                not_after: Some(1_900_000_000),
                renewal_failures: 3,
                last_error: "new order: connection refused".into(),
            },
            twelve_web::CertificateView {
                host: "www.shop.example.com".into(),
                app: "web".into(),
                source: "user".into(),
                issuer: "twelve test CA".into(),
                not_after: Some(1_900_000_000),
                ..Default::default()
            },
        ],
    }
}

fn fake_logs() -> BTreeMap<String, Vec<LogLine>> {
    let mut m = BTreeMap::new();
    let web0 = [
        ("gunicorn", "[INFO] Starting gunicorn 23.0.0"),
        ("gunicorn", "[INFO] Listening at: http://127.0.0.1:20000"),
        ("gunicorn", "[INFO] Booting worker with pid: 4121"),
        (
            "statsd-exporter",
            "level=info msg=\"Accepting Prometheus Requests\" addr=:20100",
        ),
        ("celery-beat-scheduler", "beat: Starting..."),
        ("gunicorn", "GET /healthz 200 0.002s"),
        ("gunicorn", "GET / 200 0.014s"),
        ("gunicorn", "POST /api/orders 201 0.052s"),
        (
            "celery-beat-scheduler",
            "Scheduler: Sending due task cleanup (tasks.cleanup)",
        ),
        ("gunicorn", "GET /static/app.css 200 0.001s"),
    ];
    m.insert(
        "web/0".to_string(),
        web0.iter()
            .enumerate()
            .map(|(i, (svc, msg))| LogLine {
                time: format!("2026-03-02T10:15:{:02}.120Z", i * 3),
                unit: "web/0".into(),
                service: svc.to_string(),
                message: msg.to_string(),
            })
            .collect(),
    );
    m
}

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(source: Arc<dyn Source>) -> Server {
        Server::start_with(source, twelve_web::Access::local_only()).await
    }

    pub async fn start_with(source: Arc<dyn Source>, access: twelve_web::Access) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(twelve_web::serve_with(
            listener,
            source,
            access,
            async move {
                let _ = rx.await;
            },
        ));
        Server {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits for it (open `/events` streams must not hold it).
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// One HTTP/1.0 GET (the server closes after the body).
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    get_host(addr, path, &addr.to_string()).await
}

pub async fn get_host(addr: SocketAddr, path: &str, host: &str) -> Reply {
    get_with(addr, path, &format!("Host: {host}\r\n")).await
}

/// One HTTP/1.0 GET with exactly the header lines `head` (each ending in CRLF).
pub async fn get_with(addr: SocketAddr, path: &str, head: &str) -> Reply {
    tokio::time::timeout(DEADLINE, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n{head}\r\n").as_bytes())
            .await
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        parse(&String::from_utf8(raw).unwrap())
    })
    .await
    .expect("reply in time")
}

fn parse(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// An open `/events` stream, read one SSE event at a time.
pub struct Events {
    reader: BufReader<TcpStream>,
}

pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl Events {
    pub async fn open(addr: SocketAddr) -> Events {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"GET /events HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).await.unwrap();
            if l == "\r\n" || l.is_empty() {
                break;
            }
            head.push_str(&l);
        }
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        Events { reader }
    }

    /// The next event (comments skipped), or None at the end of the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        let mut event = String::new();
        let mut data = Vec::new();
        loop {
            let mut l = String::new();
            if self.reader.read_line(&mut l).await.unwrap() == 0 {
                return None;
            }
            let l = l.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !data.is_empty() || !event.is_empty() {
                    return Some(SseEvent {
                        event,
                        data: data.join("\n"),
                    });
                }
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            if let Some(v) = l.strip_prefix("event:") {
                event = v.trim_start().to_string();
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
    }
}

/// Five apps of every framework and several statuses, for the screenshot.
pub fn showcase() -> Snapshot {
    let base = two_apps();
    let web = base.apps[0].clone();
    let api = base.apps[1].clone();
    let app = |name: &str, fw: &str, status: &str, msg: &str, release: u32, port: u16| {
        let n = |i: u16| format!("{name}/{i}");
        let units = (0..2)
            .map(|i| UnitView {
                message: msg.into(),
                ..unit(&n(i), status, &format!("127.0.0.1:{}", port + i), i == 0, 0)
            })
            .collect();
        let metrics = format!("127.0.0.1:{}", port + 100);
        AppView {
            name: name.into(),
            framework: fw.into(),
            status: status.into(),
            message: msg.into(),
            url: Some(format!("http://{name}.localhost:8000/")),
            release: Some(release),
            units,
            relations: Vec::new(),
            scrape: vec![group(name, &n(0), fw, name, &metrics, "/metrics")],
            requests_per_second: None,
        }
    };
    let mut shop = app(
        "shop",
        "django",
        "maintenance",
        "Preparing service for restart",
        12,
        20020,
    );
    shop.relations = vec!["postgresql".into(), "s3".into(), "smtp".into()];
    shop.requests_per_second = Some(8.2);
    let mut gateway = app("gateway", "go", "active", "", 31, 20030);
    gateway.relations = vec!["redis".into(), "tracing".into()];
    gateway.requests_per_second = Some(118.3);
    gateway
        .units
        .push(unit("gateway/2", "active", "127.0.0.1:20032", false, 1));
    let mut billing = app(
        "billing",
        "spring-boot",
        "blocked",
        "database migration command ['bash', '-eo', 'pipefail', 'migrate.sh'] failed, will retry in next update-status",
        4,
        20040,
    );
    billing.units.truncate(1);
    billing.relations = vec!["mysql".into(), "rabbitmq".into()];
    Snapshot {
        apps: vec![web, gateway, shop, api, billing],
        // The screenshot in the docs shows apps only.
        certificates: vec![],
        ..base
    }
}
