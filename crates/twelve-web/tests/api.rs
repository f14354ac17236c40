//! The JSON, text and SSE routes against a fake source, over real TCP.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn sd_is_prometheus_http_sd_json() {
    let src = FakeSource::new();
    let srv = Server::start(src).await;
    for path in ["/sd", "/v1/sd"] {
        let r = get(srv.addr, path).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "application/json");
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let groups = v.as_array().expect("a JSON array");
        assert_eq!(
            groups.len(),
            5,
            "3 web units + web scheduler job + 1 api unit"
        );
        for g in groups {
            let o = g.as_object().unwrap();
            let mut keys: Vec<_> = o.keys().cloned().collect();
            keys.sort();
            assert_eq!(keys, ["labels", "targets"], "nothing else in a group");
            assert!(o["targets"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string));
            assert!(o["labels"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_string));
        }
        assert_eq!(
            groups[0],
            json!({
                "targets": ["127.0.0.1:20100"],
                "labels": {
                    "__metrics_path__": "/metrics",
                    "app": "web",
                    "framework": "flask",
                    "job": "web",
                    "release": "7",
                    "unit": "web/0"
                }
            })
        );
        assert_eq!(
            groups[3],
            json!({
                "targets": ["127.0.0.1:20200"],
                "labels": {
                    "__metrics_path__": "/stats",
                    "app": "web",
                    "framework": "flask",
                    "job": "celery",
                    "release": "7",
                    "role": "scheduler",
                    "unit": "web/0"
                }
            })
        );
        assert_eq!(groups[4]["labels"]["unit"], "api/0");
        assert_eq!(groups[4]["targets"], json!(["127.0.0.1:20011"]));
    }
    srv.stop().await;
}

#[tokio::test]
async fn sd_is_an_empty_array_without_apps() {
    let src = FakeSource::new();
    src.snapshot.lock().unwrap().apps.clear();
    let srv = Server::start(src).await;
    let r = get(srv.addr, "/sd").await;
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    srv.stop().await;
}

#[tokio::test]
async fn metrics_counts_and_ingress_text() {
    let srv = Server::start(FakeSource::new()).await;
    let r = get(srv.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let lines: Vec<&str> = r.body.lines().collect();
    for want in [
        "# TYPE twelve_apps gauge",
        "twelve_apps{status=\"active\"} 1",
        "twelve_apps{status=\"blocked\"} 1",
        "twelve_apps{status=\"error\"} 0",
        "twelve_apps{status=\"waiting\"} 0",
        "# TYPE twelve_units gauge",
        "twelve_units{app=\"web\",status=\"active\"} 3",
        "twelve_units{app=\"web\",status=\"blocked\"} 0",
        "twelve_units{app=\"api\",status=\"blocked\"} 1",
        "twelve_units{app=\"api\",status=\"active\"} 0",
        "# TYPE twelve_unit_restarts_total counter",
        "twelve_unit_restarts_total{app=\"web\",unit=\"web/0\"} 0",
        "twelve_unit_restarts_total{app=\"web\",unit=\"web/1\"} 2",
        "twelve_unit_restarts_total{app=\"api\",unit=\"api/0\"} 5",
        "# TYPE twelve_migrations_total counter",
        "twelve_migrations_total 4",
        "twelve_migration_failures_total 1",
        "# TYPE twelve_reconcile_duration_seconds summary",
        "twelve_reconcile_duration_seconds_sum 12.5",
        "twelve_reconcile_duration_seconds_count 50",
        "# TYPE twelve_reconcile_last_duration_seconds gauge",
        "twelve_reconcile_last_duration_seconds 0.25",
        "twelve_dashboard_page_loads_total 0",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in\n{}", r.body);
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("twelve_apps{"))
            .count(),
        6
    );
    assert!(r.body.ends_with(INGRESS_TEXT), "ingress text appended last");
    // Every sample line is `name{labels} value` or `name value`.
    for l in lines.iter().filter(|l| !l.starts_with('#')) {
        let (series, value) = l.rsplit_once(' ').unwrap();
        assert!(!series.is_empty());
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {l:?}"));
    }
    srv.stop().await;
}

#[tokio::test]
async fn prometheus_config_is_yaml_naming_the_sd_url() {
    // Another name than localhost is answered with the token only.
    let srv = Server::start_with(FakeSource::new(), twelve_web::Access::with_token("tok")).await;
    let r = get_with(
        srv.addr,
        "/prometheus-config",
        "Host: twelve.example:9180\r\nAuthorization: Bearer tok\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("application/yaml"));
    let v: Value = serde_saphyr::from_str(&r.body).unwrap();
    let jobs = v["scrape_configs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["job_name"], "twelve-apps");
    assert_eq!(
        jobs[0]["http_sd_configs"][0]["url"],
        "http://twelve.example:9180/sd"
    );
    assert_eq!(
        jobs[0]["relabel_configs"][0]["source_labels"],
        json!(["unit"])
    );
    assert_eq!(jobs[0]["relabel_configs"][0]["target_label"], "instance");
    assert_eq!(jobs[1]["metrics_path"], "/metrics");
    assert_eq!(
        jobs[1]["static_configs"][0]["targets"],
        json!(["twelve.example:9180"])
    );

    // A Host header that could break the YAML is not used.
    let r = get_with(
        srv.addr,
        "/prometheus-config",
        "Host: a\"b\r\nAuthorization: Bearer tok\r\n",
    )
    .await;
    let v: Value = serde_saphyr::from_str(&r.body).unwrap();
    assert_eq!(
        v["scrape_configs"][0]["http_sd_configs"][0]["url"],
        format!("http://{}/sd", twelve_web::DEFAULT_ADDR)
    );
    srv.stop().await;
}

#[tokio::test]
async fn api_state_and_logs() {
    let srv = Server::start(FakeSource::new()).await;
    let r = get(srv.addr, "/api/state").await;
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["apps"][0]["name"], "web");
    assert_eq!(v["apps"][1]["status"], "blocked");
    assert_eq!(v["apps"][0]["units"][0]["leader"], true);
    assert_eq!(v["controller"]["migrations_total"], 4);
    assert!(
        v.get("ingress_metrics").is_none(),
        "not part of the JSON state"
    );

    let r = get(srv.addr, "/api/logs?unit=web/0&n=3").await;
    assert_eq!(r.status, 200);
    let lines: Value = serde_json::from_str(&r.body).unwrap();
    let lines = lines.as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["message"], "GET /static/app.css 200 0.001s");
    assert_eq!(lines[2]["unit"], "web/0");
    assert_eq!(lines[2]["service"], "gunicorn");

    let r = get(srv.addr, "/api/logs?unit=web%2F0").await;
    assert_eq!(
        serde_json::from_str::<Value>(&r.body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        10
    );
    let r = get(srv.addr, "/api/logs?unit=nope/9&n=5").await;
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    let r = get(srv.addr, "/api/logs").await;
    assert_eq!(r.status, 400);
    srv.stop().await;
}

#[tokio::test]
async fn events_send_state_on_change_only() {
    let src = FakeSource::new();
    let srv = Server::start(src.clone()).await;
    let mut ev = Events::open(srv.addr).await;

    let first = tokio::time::timeout(DEADLINE, ev.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.event, "state");
    let v: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(v["apps"][1]["status"], "blocked");

    // Nothing changes: no event for a few polls.
    assert!(
        tokio::time::timeout(Duration::from_millis(1600), ev.next())
            .await
            .is_err(),
        "no event without a change"
    );

    // /metrics shows the open stream.
    let m = get(srv.addr, "/metrics").await;
    assert!(
        m.body.contains("twelve_dashboard_event_streams 1\n"),
        "{}",
        m.body
    );

    src.set_app_status("api", "active", "");
    let next = tokio::time::timeout(Duration::from_secs(5), ev.next())
        .await
        .expect("a state event after the change")
        .unwrap();
    assert_eq!(next.event, "state");
    let v: Value = serde_json::from_str(&next.data).unwrap();
    assert_eq!(v["apps"][1]["status"], "active");
    assert_eq!(v["apps"][1]["units"][0]["status"], "active");

    // Shutdown ends the open stream and the server.
    srv.stop().await;
    assert!(tokio::time::timeout(DEADLINE, ev.next())
        .await
        .unwrap()
        .is_none());
}

/// Every route, as a browser or Prometheus would ask for it.
const ROUTES: [&str; 8] = [
    "/",
    "/sd",
    "/v1/sd",
    "/prometheus-config",
    "/metrics",
    "/api/state",
    "/api/logs?unit=web/0&n=5",
    "/events",
];

/// The status of a GET, without waiting for the end of an `/events` stream.
async fn status_of(addr: std::net::SocketAddr, path: &str, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(DEADLINE, async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n{head}\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before a head");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let code = text.split(' ').nth(1).unwrap().parse().unwrap();
        (code, text)
    })
    .await
    .expect("an answer in time")
}

#[tokio::test]
async fn only_loopback_host_names_are_answered() {
    let srv = Server::start(FakeSource::new()).await;
    let port = srv.addr.port();
    for path in ROUTES {
        // A page of another site whose name now resolves to 127.0.0.1 (DNS rebinding).
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("localhost.evil.example:{port}"),
        ] {
            let (code, text) = status_of(srv.addr, path, &format!("Host: {host}\r\n")).await;
            assert_eq!(code, 403, "{path} for {host}: {text}");
        }
        let (code, _) = status_of(srv.addr, path, "").await;
        assert_eq!(code, 403, "{path} without a Host");
        for host in [
            "localhost".to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ] {
            let (code, text) = status_of(srv.addr, path, &format!("Host: {host}\r\n")).await;
            assert_eq!(code, 200, "{path} for {host}: {text}");
        }
    }
    let r = get_host(srv.addr, "/api/state", "evil.example").await;
    assert!(r.body.contains("twelve dashboard --token"), "{}", r.body);
    srv.stop().await;
}

#[tokio::test]
async fn the_token_opens_every_route_for_any_host() {
    const TOKEN: &str = "Zm9vYmFyYmF6LXRva2VuLWZvci10ZXN0cy0xMjM0NTY";
    let srv = Server::start_with(FakeSource::new(), twelve_web::Access::with_token(TOKEN)).await;
    let evil = "Host: dash.example:9180\r\n";
    for path in ROUTES {
        let (code, text) = status_of(srv.addr, path, evil).await;
        assert_eq!(code, 403, "{path} without the token: {text}");
        let (code, _) = status_of(
            srv.addr,
            path,
            &format!("{evil}Authorization: Bearer wrong{}\r\n", &TOKEN[5..]),
        )
        .await;
        assert_eq!(code, 403, "{path} with a wrong token");
        let (code, text) = status_of(
            srv.addr,
            path,
            &format!("{evil}Authorization: Bearer {TOKEN}\r\n"),
        )
        .await;
        assert_eq!(code, 200, "{path} with the token: {text}");
        let (code, text) = status_of(
            srv.addr,
            path,
            &format!(
                "{evil}Cookie: theme=dark; {}={TOKEN}\r\n",
                twelve_web::TOKEN_COOKIE
            ),
        )
        .await;
        assert_eq!(code, 200, "{path} with the cookie: {text}");
        // Loopback names need no token.
        let (code, _) = status_of(srv.addr, path, "Host: localhost\r\n").await;
        assert_eq!(code, 200, "{path} for localhost");
    }

    // `?token=` on the page: the cookie, and the same page without the token in its URL.
    let r = get_with(srv.addr, &format!("/?token={TOKEN}"), evil).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.headers["location"], "/");
    let cookie = &r.headers["set-cookie"];
    assert!(
        cookie.starts_with(&format!("{}={TOKEN};", twelve_web::TOKEN_COOKIE)),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // Elsewhere, `?token=` answers at once (a script or Prometheus needs no redirect).
    let r = get_with(
        srv.addr,
        &format!("/api/logs?unit=web/0&token={TOKEN}&n=2"),
        evil,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers["set-cookie"].contains("HttpOnly"));
    assert_eq!(
        serde_json::from_str::<Value>(&r.body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = get_with(srv.addr, "/api/state?token=nope", evil).await;
    assert_eq!(r.status, 403);
    assert!(!r.body.contains(TOKEN) && !r.headers.contains_key("set-cookie"));
    srv.stop().await;
}
