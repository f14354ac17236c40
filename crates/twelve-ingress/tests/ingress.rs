//! The ingress in-process, in front of real backends. Every wait polls with a deadline;
//! nothing asserts on how fast something happens.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use twelve_ingress::{client, BackendState, Policy, RouteTable, Timeouts};

use BackendState::{Draining, Ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routing_sends_the_path_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let web = TestBackend::start("web/0").await;
    let api = TestBackend::start("api/0").await;
    let ingress = start_ingress(dir.path()).await;
    ingress
        .set_routes(table(vec![
            ("web", app(Policy::RoundRobin, vec![web.route(Ready)])),
            ("api", app(Policy::RoundRobin, vec![api.route(Ready)])),
        ]))
        .unwrap();

    for (host, unit) in [
        ("web.localhost", "web/0"),
        ("api.localhost:8080", "api/0"),
        ("API.example.com", "api/0"),
    ] {
        let reply = get(ingress.addr(), host, "/a/b?c=d").await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
        assert_eq!(reply.unit(), unit, "{host}");
        assert_eq!(reply.seen("path"), Some("/a/b?c=d"));
        assert_eq!(reply.seen("host"), Some(host));
        assert_eq!(reply.seen("x-forwarded-host"), Some(host));
        assert_eq!(reply.seen("x-forwarded-prefix"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefix_is_stripped_and_forwarded_headers_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let (_web, ingress) = web_behind_ingress(dir.path()).await;

    for (path, upstream) in [
        ("/web/a/b?c=d", "/a/b?c=d"),
        ("/web", "/"),
        ("/web/", "/"),
        ("/web?x=1", "/?x=1"),
    ] {
        let req = Request::get(path)
            .header("host", "localhost:8080")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-prefix", "/spoofed")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = send(ingress.addr(), req).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.seen("path"), Some(upstream), "{path}");
        assert_eq!(reply.seen("x-forwarded-prefix"), Some("/web"));
        assert_eq!(reply.seen("x-forwarded-host"), Some("localhost:8080"));
        assert_eq!(reply.seen("x-forwarded-proto"), Some("http"));
        assert_eq!(reply.seen("x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
        assert_eq!(reply.seen("x-hop"), None, "named in Connection: hop-by-hop");
        let traceparent = reply.seen("traceparent").expect("a traceparent is added");
        assert_eq!(traceparent.len(), 55);
        assert!(traceparent.starts_with("00-") && traceparent.ends_with("-01"));
    }

    // A traceparent the client sent is kept as it is.
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = Request::get("/web/")
        .header("host", "localhost")
        .header("traceparent", theirs)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send(ingress.addr(), req).await.seen("traceparent"),
        Some(theirs)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        TestBackend::start("web/0").await,
        TestBackend::start("web/1").await,
        TestBackend::start("web/2").await,
    );
    let ingress = start_ingress(dir.path()).await;
    ingress
        .set_routes(table(vec![(
            "web",
            app(
                Policy::RoundRobin,
                vec![a.route(Ready), b.route(Ready), c.route(Ready)],
            ),
        )]))
        .unwrap();
    for _ in 0..12 {
        assert_eq!(get(ingress.addr(), "web.localhost", "/").await.status, 200);
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (4, 4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_busy_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        TestBackend::start("web/0").await,
        TestBackend::start("web/1").await,
    );
    let ingress = start_ingress(dir.path()).await;
    ingress
        .set_routes(table(vec![(
            "web",
            app(
                Policy::LeastConnections,
                vec![a.route(Ready), b.route(Ready)],
            ),
        )]))
        .unwrap();
    let addr = ingress.addr();
    let held = tokio::spawn(async move { get(addr, "web.localhost", "/hold").await });
    eventually("a request held", || {
        a.held.load(Ordering::SeqCst) + b.held.load(Ordering::SeqCst) == 1
    })
    .await;
    let (busy, idle) = if a.held.load(Ordering::SeqCst) == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    for _ in 0..6 {
        assert_eq!(get(addr, "web.localhost", "/").await.unit(), idle.unit);
    }
    assert_eq!(busy.hits(), 1);
    busy.release.add_permits(1);
    assert_eq!(held.await.unwrap().unit(), busy.unit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_backend_gets_no_new_request_but_finishes_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        TestBackend::start("web/0").await,
        TestBackend::start("web/1").await,
    );
    let ingress = start_ingress(dir.path()).await;
    let socket = ingress.admin_socket().to_path_buf();
    ingress
        .set_routes(table(vec![(
            "web",
            app(Policy::RoundRobin, vec![old.route(Ready)]),
        )]))
        .unwrap();
    let addr = ingress.addr();
    let held = tokio::spawn(async move { get(addr, "web.localhost", "/hold").await });
    eventually("the request held", || old.held.load(Ordering::SeqCst) == 1).await;

    let routes = table(vec![(
        "web",
        app(
            Policy::RoundRobin,
            vec![old.route(Draining), new.route(Ready)],
        ),
    )]);
    client::put_routes(&socket, &routes).await.unwrap();
    for _ in 0..5 {
        assert_eq!(get(addr, "web.localhost", "/").await.unit(), "web/1");
    }
    let inflight = client::get_inflight(&socket).await.unwrap();
    let old_inflight = inflight.iter().find(|b| b.unit == "web/0").unwrap();
    assert_eq!((old_inflight.addr, old_inflight.inflight), (old.addr, 1));

    // The controller drops the unit from the table while its request still runs.
    let routes = table(vec![(
        "web",
        app(Policy::RoundRobin, vec![new.route(Ready)]),
    )]);
    client::put_routes(&socket, &routes).await.unwrap();
    assert!(client::get_inflight(&socket)
        .await
        .unwrap()
        .iter()
        .any(|b| b.unit == "web/0" && b.inflight == 1));

    old.release.add_permits(1);
    let reply = held.await.unwrap();
    assert_eq!((reply.status, reply.unit()), (StatusCode::OK, "web/0"));
    let start = Instant::now();
    loop {
        let list = client::get_inflight(&socket).await.unwrap();
        if !list.iter().any(|b| b.unit == "web/0" && b.inflight > 0) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "web/0 never drained: {list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(old.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_is_invisible_to_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        TestBackend::start("web/0").await,
        TestBackend::start("web/1").await,
    );
    let ingress = start_ingress(dir.path()).await;
    ingress
        .set_routes(table(vec![(
            "web",
            app(Policy::RoundRobin, vec![a.route(Ready), b.route(Ready)]),
        )]))
        .unwrap();
    // Both have pooled connections, then one stops before the table says so.
    for _ in 0..4 {
        assert_eq!(get(ingress.addr(), "web.localhost", "/").await.status, 200);
    }
    a.stop();
    for _ in 0..10 {
        let reply = get(ingress.addr(), "web.localhost", "/").await;
        assert_eq!((reply.status, reply.unit()), (StatusCode::OK, "web/1"));
    }
    // A body that was not sent can be retried too.
    for _ in 0..4 {
        let req = Request::post("/web/")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send(ingress.addr(), req).await.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_ready_unit_answers_503_naming_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let draining = TestBackend::start("web/0").await;
    let ingress = start_ingress(dir.path()).await;
    let mut web = app(Policy::RoundRobin, vec![draining.route(Draining)]);
    web.status = "blocked".into();
    web.message = "missing options: token".into();
    ingress.set_routes(table(vec![("web", web)])).unwrap();

    for (host, path) in [("web.localhost", "/"), ("localhost", "/web/x")] {
        let reply = get(ingress.addr(), host, path).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            reply
                .body
                .contains("web is blocked: missing options: token"),
            "{}",
            reply.body
        );
    }
    assert_eq!(draining.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_app_answers_404_naming_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ingress = start_ingress(dir.path()).await;
    ingress
        .set_routes(table(vec![
            ("web", app(Policy::RoundRobin, vec![])),
            ("api", app(Policy::RoundRobin, vec![])),
        ]))
        .unwrap();
    for (host, path) in [
        ("nope.localhost", "/"),
        ("localhost", "/nope/"),
        ("localhost", "/"),
    ] {
        let reply = get(ingress.addr(), host, path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert!(reply.body.contains("Apps: api, web"), "{}", reply.body);
    }
    // Metrics are on the admin socket only.
    assert_eq!(
        get(ingress.addr(), "localhost", "/metrics").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let (_web, ingress) = web_behind_ingress(dir.path()).await;
    let mut stream = TcpStream::connect(ingress.addr()).await.unwrap();
    let head = raw(
        &mut stream,
        b"GET /web/socket HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for message in ["hello", "world, twice as long"] {
        let echoed = raw(&mut stream, message.as_bytes(), message).await;
        assert_eq!(echoed, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_through() {
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;

    // 20 MiB in 1 MiB chunks; the second chunk is only sent once the backend has seen
    // bytes of the first, which a buffering proxy would never let happen.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = ChannelBody(rx);
    let req = Request::post("/upload")
        .header("host", "web.localhost")
        .body(body)
        .unwrap();
    let addr = ingress.addr();
    let upload = tokio::spawn(async move { send(addr, req).await });
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    tx.send(chunk.clone()).await.unwrap();
    eventually("the backend sees the first chunk", || {
        web.received.load(Ordering::SeqCst) > 0
    })
    .await;
    for _ in 1..20 {
        tx.send(chunk.clone()).await.unwrap();
    }
    drop(tx);
    let reply = upload.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.seen("received"), Some("20971520"));
}

/// A request body fed chunk by chunk from the test.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_are_proxied_to_http1_backends() {
    let dir = tempfile::tempdir().unwrap();
    let (_web, ingress) = web_behind_ingress(dir.path()).await;
    let port = ingress.addr().port();
    let by_host = get_h2c(ingress.addr(), &format!("http://web.localhost:{port}/h2?q")).await;
    assert_eq!(by_host.status, StatusCode::OK);
    assert_eq!(by_host.seen("path"), Some("/h2?q"));
    assert_eq!(
        by_host.seen("host"),
        Some(format!("web.localhost:{port}").as_str())
    );
    let by_path = get_h2c(ingress.addr(), &format!("http://127.0.0.1:{port}/web/h2")).await;
    assert_eq!(by_path.seen("path"), Some("/h2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_does_not_delay_others_and_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let web = TestBackend::start("web/0").await;
    let ingress = start_ingress(dir.path()).await;
    let mut routes = table(vec![(
        "web",
        app(Policy::RoundRobin, vec![web.route(Ready)]),
    )]);
    routes.timeouts.header_read_ms = 3000;
    ingress.set_routes(routes).unwrap();

    let started = Instant::now();
    let stream = TcpStream::connect(ingress.addr()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Slow: 1234567890abcdef" {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let cut = tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let _ = read.read(&mut buf).await;
        started.elapsed()
    });

    for _ in 0..5 {
        assert_eq!(get(ingress.addr(), "web.localhost", "/").await.status, 200);
    }
    assert!(
        !cut.is_finished(),
        "others were served while the slow client was still connected"
    );
    let after = tokio::time::timeout(DEADLINE, cut).await.unwrap().unwrap();
    assert!(after >= Duration::from_millis(2900), "cut after {after:?}");
    assert_eq!(web.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_body_does_not_delay_others_and_still_arrives() {
    // The body of a slow upload streams to its backend byte by byte while the ingress
    // serves other clients, on the same backend, in between.
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    let mut slow = TcpStream::connect(ingress.addr()).await.unwrap();
    slow.write_all(b"POST /upload HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    for (i, byte) in b"0123456789".iter().enumerate() {
        slow.write_all(&[*byte]).await.unwrap();
        eventually("the byte reaches the backend", || {
            web.received.load(Ordering::SeqCst) == i as u64 + 1
        })
        .await;
        assert_eq!(get(ingress.addr(), "web.localhost", "/").await.status, 200);
    }
    let answer = read_until(&mut slow, "received=10\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("received=10\n"), "{answer:?}");
    assert_eq!(web.hits(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431() {
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    // Exactly the limit and not yet a whole head: the ingress reads all of it, so its
    // answer is not lost to a reset.
    let mut head = b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Big: ".to_vec();
    head.resize(twelve_ingress::MAX_REQUEST_HEAD, b'a');
    let mut stream = TcpStream::connect(ingress.addr()).await.unwrap();
    let answer = raw(&mut stream, &head, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(web.hits(), 0);
    assert_eq!(get(ingress.addr(), "web.localhost", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_400_and_a_concurrent_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    let addr = ingress.addr();
    let good = tokio::spawn(async move { get(addr, "web.localhost", "/hold").await });
    eventually("the good request reaches the backend", || {
        web.held.load(Ordering::SeqCst) == 1
    })
    .await;
    for (garbage, status) in [
        (&b"GARBAGE\r\n\r\n"[..], 400),
        (b"GET / HTTP/1.1\r\nHost web.localhost\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        // HTTP/1.1 without Host, also in absolute form (as nginx).
        (b"GET /web/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://web.localhost/ HTTP/1.1\r\n\r\n", 400),
        // Ways to make a proxy and its backend disagree on where a request ends.
        (
            b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (
            b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            501,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.0\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: web.localhost\r\nHost: other.localhost\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: -1\r\n\r\n", 400),
        // A malformed chunk in what came with the head: refused before any backend sees it.
        (
            b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabcXX0\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
              fffffffffffffffff\r\nabc\r\n",
            400,
        ),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let answer = raw(&mut stream, garbage, "\r\n\r\n").await;
        let want = format!("HTTP/1.1 {status} ");
        assert!(answer.starts_with(&want), "{want}: {answer:?}");
    }
    web.release.add_permits(1);
    assert_eq!(good.await.unwrap().status, StatusCode::OK);
    assert_eq!(web.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_does_not_disturb_others() {
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    let mut stream = TcpStream::connect(ingress.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 10000000\r\n\r\n",
        )
        .await
        .unwrap();
    stream.write_all(&vec![b'x'; 100_000]).await.unwrap();
    eventually("the upload reaches the backend", || {
        web.received.load(Ordering::SeqCst) > 0
    })
    .await;
    drop(stream);

    for _ in 0..5 {
        assert_eq!(get(ingress.addr(), "web.localhost", "/").await.status, 200);
    }
    eventually("the abandoned request is no longer in flight", || {
        ingress.inflight().iter().all(|b| b.inflight == 0)
    })
    .await;
    assert_eq!(get(ingress.addr(), "web.localhost", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_unreachable_backends_give_504_and_502() {
    let dir = tempfile::tempdir().unwrap();
    let web = TestBackend::start("web/0").await;
    let gone = TestBackend::start("gone/0").await;
    gone.stop();
    let ingress = start_ingress(dir.path()).await;
    let mut routes = table(vec![
        ("web", app(Policy::RoundRobin, vec![web.route(Ready)])),
        ("gone", app(Policy::RoundRobin, vec![gone.route(Ready)])),
    ]);
    routes.timeouts.request_ms = 300;
    ingress.set_routes(routes).unwrap();

    let reply = get(ingress.addr(), "web.localhost", "/slow?5000").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
    assert!(reply.body.contains("web/0"), "{}", reply.body);
    let reply = get(ingress.addr(), "gone.localhost", "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.body);
    assert!(reply.body.contains("gone/0"), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_app_unit_and_class() {
    let dir = tempfile::tempdir().unwrap();
    let web = TestBackend::start("web/0").await;
    let ingress = start_ingress(dir.path()).await;
    ingress
        .set_routes(table(vec![
            ("web", app(Policy::RoundRobin, vec![web.route(Ready)])),
            ("idle", app(Policy::RoundRobin, vec![])),
        ]))
        .unwrap();
    for _ in 0..3 {
        get(ingress.addr(), "web.localhost", "/").await;
    }
    get(ingress.addr(), "idle.localhost", "/").await;
    let socket = ingress.admin_socket().to_path_buf();
    let mut text = String::new();
    let start = Instant::now();
    while !text.contains("twelve_ingress_request_duration_seconds_count{app=\"web\"} 3\n") {
        assert!(start.elapsed() < DEADLINE, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = client::get_metrics(&socket).await.unwrap();
    }
    for line in [
        "twelve_ingress_requests_total{app=\"web\",unit=\"web/0\",class=\"2xx\"} 3",
        "twelve_ingress_requests_total{app=\"web\",unit=\"web/0\",class=\"5xx\"} 0",
        "twelve_ingress_requests_total{app=\"idle\",unit=\"\",class=\"5xx\"} 1",
        "twelve_ingress_request_duration_seconds_bucket{app=\"web\",le=\"+Inf\"} 3",
        "twelve_ingress_inflight{app=\"web\",unit=\"web/0\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_persisted_and_served_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let web = TestBackend::start("web/0").await;
    let ingress = start_ingress(dir.path()).await;
    let socket = ingress.admin_socket().to_path_buf();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pid = std::fs::read_to_string(dir.path().join("ingress.pid")).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());

    let mut routes = table(vec![(
        "web",
        app(Policy::LeastConnections, vec![web.route(Ready)]),
    )]);
    routes.timeouts = Timeouts {
        request_ms: 1234,
        ..Timeouts::default()
    };
    client::put_routes(&socket, &routes).await.unwrap();
    assert_eq!(client::get_routes(&socket).await.unwrap(), routes);
    let on_disk = RouteTable::load(&dir.path().join("routes.json"))
        .unwrap()
        .unwrap();
    assert_eq!(on_disk, routes);

    // An invalid table is refused and changes nothing.
    let refused = client::call(
        &socket,
        hyper::Method::PUT,
        "/routes",
        Some(br#"{"apps": {"Bad Name": {}}}"#.to_vec()),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("400"), "{refused}");
    assert_eq!(client::get_routes(&socket).await.unwrap(), routes);

    ingress.shutdown().await;
    assert!(!socket.exists());
    let ingress = start_ingress(dir.path()).await;
    assert_eq!(ingress.routes(), routes);
    let reply = get(ingress.addr(), "web.localhost", "/").await;
    assert_eq!((reply.status, reply.unit()), (StatusCode::OK, "web/0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    let addr = ingress.addr();
    let held = tokio::spawn(async move { get(addr, "web.localhost", "/hold").await });
    eventually("the request held", || web.held.load(Ordering::SeqCst) == 1).await;
    let stopping = tokio::spawn(ingress.shutdown());
    eventually("the listener closed", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    web.release.add_permits(1);
    assert_eq!(held.await.unwrap().status, StatusCode::OK);
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_closes_idle_keep_alive_connections_and_ends_busy_ones_after_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    let mut idle = TcpStream::connect(ingress.addr()).await.unwrap();
    let answer = raw(
        &mut idle,
        b"GET /first HTTP/1.1\r\nHost: web.localhost\r\n\r\n",
        "path=/first\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut busy = TcpStream::connect(ingress.addr()).await.unwrap();
    busy.write_all(b"GET /hold HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        .await
        .unwrap();
    eventually("the request held", || web.held.load(Ordering::SeqCst) == 1).await;

    let stopping = tokio::spawn(ingress.shutdown());
    // The kept-alive connection with nothing in flight is closed at once...
    assert_eq!(read_to_end(&mut idle).await, "");
    assert_eq!(
        web.held.load(Ordering::SeqCst),
        1,
        "closed while one was held"
    );
    // ...the busy one gets its answer, saying the connection ends, and then ends.
    web.release.add_permits(1);
    let answer = read_to_end(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("released\n"), "{answer}");
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_ingress_serves_on_the_callers_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let web = TestBackend::start("web/0").await;
    let mut config = twelve_ingress::IngressConfig::new(dir.path());
    config.port = 0;
    config.workers = 0;
    let ingress = twelve_ingress::IngressHandle::start(config).await.unwrap();
    ingress
        .set_routes(table(vec![(
            "web",
            app(Policy::RoundRobin, vec![web.route(Ready)]),
        )]))
        .unwrap();
    assert_eq!(
        get(ingress.addr(), "web.localhost", "/").await.unit(),
        "web/0"
    );
    ingress.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_but_not_one_waiting_for_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let web = TestBackend::start("web/0").await;
    let ingress = start_ingress(dir.path()).await;
    let mut routes = table(vec![(
        "web",
        app(Policy::RoundRobin, vec![web.route(Ready)]),
    )]);
    routes.timeouts.idle_ms = 300;
    ingress.set_routes(routes).unwrap();

    let mut stream = TcpStream::connect(ingress.addr()).await.unwrap();
    // Waiting 1 s for the backend is not idling.
    let answer = raw(
        &mut stream,
        b"GET /slow?1000 HTTP/1.1\r\nHost: web.localhost\r\n\r\n",
        "slow\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let idle_since = Instant::now();
    let rest = read_until(&mut stream, "never sent").await;
    assert_eq!(rest, "", "the connection closes without another byte");
    assert!(idle_since.elapsed() >= Duration::from_millis(250));
    assert!(idle_since.elapsed() < DEADLINE);
}

/// Reads from `stream` until it is closed (or [`DEADLINE`]).
async fn read_to_end(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_head_has_no_body() {
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    let mut stream = TcpStream::connect(ingress.addr()).await.unwrap();
    let answer = raw(
        &mut stream,
        b"GET /a HTTP/1.1\r\nHost: web.localhost\r\n\r\n\
          HEAD /b HTTP/1.1\r\nHost: web.localhost\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: web.localhost\r\n\r\n",
        "path=/c\n",
    )
    .await;
    let responses: Vec<&str> = answer.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(responses.len(), 3, "{answer}");
    assert!(responses[0].contains("path=/a\n"), "{answer}");
    // HEAD: the length of the body GET would have, and no body.
    assert!(
        responses[1]
            .to_ascii_lowercase()
            .contains("content-length: "),
        "{answer}"
    );
    assert!(responses[1].ends_with("\r\n\r\n"), "{answer}");
    assert!(responses[2].contains("path=/c\n"), "{answer}");
    assert_eq!(web.hits(), 3);

    // A HEAD the ingress answers itself has no body either.
    let answer = raw(
        &mut stream,
        b"HEAD /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /web/d HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "path=/d\n",
    )
    .await;
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(rest.contains("path=/d\n"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_ingress_does_not_forward_is_never_taken_for_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    // A 404 answered before the body: the body holds what looks like a request.
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: web.localhost\r\n\r\n";
    let mut request = format!(
        "POST /nothing HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    )
    .into_bytes();
    request.extend_from_slice(smuggled);
    let mut stream = TcpStream::connect(ingress.addr()).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let answer = read_to_end(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.contains("\r\ndate: "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    assert_eq!(web.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_absolute_targets_and_expect_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (_web, ingress) = web_behind_ingress(dir.path()).await;
    let addr = ingress.addr();

    // HTTP/1.0 without Host, routed by path: answered, then closed.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /web/old HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_end(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("path=/old\n"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");

    // HTTP/1.0 asking to keep the connection: it is kept and says so.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for path in ["/one", "/two"] {
        let request = format!("GET /web{path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let answer = raw(&mut stream, request.as_bytes(), &format!("path={path}\n")).await;
        assert!(answer.contains("connection: keep-alive\r\n"), "{answer}");
        assert!(answer.contains(&format!("path={path}\n")), "{answer}");
    }

    // The absolute form routes by its authority, which becomes the forwarded host.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = raw(
        &mut stream,
        b"GET http://web.localhost:8080/abs?x=1 HTTP/1.1\r\nHost: web.localhost:8080\r\n\r\n",
        "x-forwarded-host",
    )
    .await;
    assert!(answer.contains("path=/abs?x=1\n"), "{answer}");
    assert!(answer.contains("host: web.localhost:8080\n"), "{answer}");
    // Whatever the Host field says: the app sees the target's authority.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = raw(
        &mut stream,
        b"GET http://web.localhost/abs HTTP/1.1\r\nHost: other.example\r\n\r\n",
        "x-forwarded-host",
    )
    .await;
    assert!(answer.contains("\nhost: web.localhost\n"), "{answer}");
    assert!(!answer.contains("other.example"), "{answer}");

    // The same Content-Length twice is one: the backend gets it once.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = raw(
        &mut stream,
        b"POST /twice HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 2\r\n\
          Content-Length: 2\r\n\r\nok",
        "x-forwarded-host",
    )
    .await;
    assert!(answer.contains("path=/twice\n"), "{answer}");
    assert_eq!(answer.matches("content-length: 2\n").count(), 1, "{answer}");

    // Expect: 100-continue gets its interim answer before the body is sent.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let interim = raw(
        &mut stream,
        b"POST /upload HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    let answer = raw(&mut stream, b"hello", "received=5\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("received=5\n"), "{answer}");
}

/// A backend answering every request on a connection with `answer`, closing after it when
/// `close`.
async fn raw_backend(answer: &'static [u8], close: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        if stream.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_close_delimited_bodies_reach_clients_whole() {
    let dir = tempfile::tempdir().unwrap();
    let chunked = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        false,
    )
    .await;
    let until_close = raw_backend(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", true).await;
    let backend = |app: &str, addr| twelve_ingress::Backend {
        unit: format!("{app}/0"),
        addr,
        socket: None,
        socket_uid: None,
        state: Ready,
    };
    let ingress = start_ingress(dir.path()).await;
    ingress
        .set_routes(table(vec![
            (
                "chunked",
                app(Policy::RoundRobin, vec![backend("chunked", chunked)]),
            ),
            (
                "eof",
                app(Policy::RoundRobin, vec![backend("eof", until_close)]),
            ),
        ]))
        .unwrap();
    let addr = ingress.addr();
    for (host, body) in [
        ("chunked.localhost", "hello world"),
        ("eof.localhost", "until the end"),
    ] {
        // Twice on one connection: the first response ended where the client expected.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let answer = raw(&mut stream, request.as_bytes(), "0\r\n\r\n").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(
                answer.contains("transfer-encoding: chunked\r\n"),
                "{answer}"
            );
            assert!(answer.ends_with("0\r\n\r\n"), "{answer}");
            assert!(!answer.contains("X-Trailer"), "{answer}");
        }
        let reply = get(addr, host, "/").await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, body));
        // An HTTP/1.0 client gets the body up to the end of the connection.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_to_end(&mut stream).await;
        assert!(answer.ends_with(&format!("\r\n\r\n{body}")), "{answer}");
        assert!(!answer.contains("transfer-encoding"), "{answer}");
    }
}
