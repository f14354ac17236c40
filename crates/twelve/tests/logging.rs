//! Log forwarding to Loki end to end: `twelve logs APP --forward loki=URL` (the `logging`
//! integration) makes every unit's supervisor push its services' output to a real HTTP
//! receiver that checks the Loki push format; `remove-relation` stops it.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

/// One line as Loki would store it: the stream's labels and the line.
#[derive(Debug, Clone)]
struct Entry {
    labels: BTreeMap<String, String>,
    nanos: u128,
    line: String,
}

/// A Loki push endpoint (`POST /loki/api/v1/push`, JSON) that checks every request the way
/// Loki does and keeps what it accepted. A request in any other shape is recorded as an
/// error, answered 400, and fails the test.
struct Receiver {
    port: u16,
    entries: Arc<Mutex<Vec<Entry>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

fn check_push(path: &str, content_type: &str, body: &[u8]) -> Result<Vec<Entry>, String> {
    if path != "/loki/api/v1/push" {
        return Err(format!("pushed to {path}"));
    }
    if !content_type.starts_with("application/json") {
        return Err(format!("content-type {content_type:?}"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let streams = v["streams"].as_array().ok_or("no streams array")?;
    let mut out = vec![];
    for s in streams {
        let labels: BTreeMap<String, String> = s["stream"]
            .as_object()
            .ok_or("a stream without labels")?
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.as_str()
                        .ok_or("a label that is not a string")?
                        .to_string(),
                ))
            })
            .collect::<Result<_, String>>()?;
        for pair in s["values"].as_array().ok_or("a stream without values")? {
            let pair = pair
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or("a value that is not a pair")?;
            let nanos: u128 = pair[0]
                .as_str()
                .ok_or("a timestamp that is not a string")?
                .parse()
                .map_err(|_| "a timestamp that is not nanoseconds")?;
            let line = pair[1]
                .as_str()
                .ok_or("a line that is not a string")?
                .to_string();
            out.push(Entry {
                labels: labels.clone(),
                nanos,
                line,
            });
        }
    }
    Ok(out)
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let entries = Arc::new(Mutex::new(vec![]));
        let errors = Arc::new(Mutex::new(vec![]));
        let (e, errs) = (entries.clone(), errors.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (e, errs) = (e.clone(), errs.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut request = String::new();
                        if reader.read_line(&mut request).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = request.split_whitespace();
                        let (method, path) = (
                            parts.next().unwrap_or("").to_string(),
                            parts.next().unwrap_or("").to_string(),
                        );
                        let (mut length, mut content_type) = (0usize, String::new());
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                match k.to_ascii_lowercase().as_str() {
                                    "content-length" => length = v.trim().parse().unwrap_or(0),
                                    "content-type" => content_type = v.trim().to_string(),
                                    _ => {}
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let result = if method == "POST" {
                            check_push(&path, &content_type, &body)
                        } else {
                            Err(format!("{method} {path}"))
                        };
                        let status = match result {
                            Ok(got) => {
                                e.lock().unwrap().extend(got);
                                "204 No Content"
                            }
                            Err(why) => {
                                errs.lock().unwrap().push(why);
                                "400 Bad Request"
                            }
                        };
                        let _ = write!(conn, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                    }
                });
            }
        });
        Receiver {
            port,
            entries,
            errors,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/loki/api/v1/push", self.port)
    }

    fn entries(&self) -> Vec<Entry> {
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "pushes Loki would refuse: {errors:?}");
        self.entries.lock().unwrap().clone()
    }
}

#[test]
fn logs_forward_to_loki_with_labels_and_stop_on_remove_relation() {
    let t = Twelve::new();
    let loki = Receiver::start();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "shipped", "-n", "2"]);
    eventually("both units serving", LONG, || {
        (0..2)
            .all(|u| {
                t.try_port(&format!("shipped/{u}"))
                    .and_then(|p| http_get(p, "/"))
                    .is_some()
            })
            .then_some(())
    });

    // The worker's pid on each unit, from its heartbeats in the local logs.
    let worker_pid = |line: &str| -> Option<String> {
        let rest = &line[line.find("worker alive beat=")?..];
        Some(
            rest.split_whitespace()
                .find(|w| w.starts_with("pid="))?
                .to_string(),
        )
    };
    let pids_before: Vec<String> = (0..2)
        .map(|u| {
            eventually("a heartbeat in the unit's logs", LONG, || {
                let out = t.ok(&["logs", &format!("shipped/{u}"), "-n", "50"]);
                out.lines().rev().find_map(worker_pid)
            })
        })
        .collect();

    let err = t.fails(&["logs", "shipped", "--forward", "elk=http://x/"]);
    assert!(err.contains("expected loki=URL"), "{err}");
    let err = t.fails(&["logs", "shipped", "--forward", "loki=not-a-url"]);
    assert!(err.contains("url"), "{err}");
    let out = t.ok(&[
        "logs",
        "shipped",
        "--forward",
        &format!("loki={}", loki.url()),
    ]);
    assert!(out.contains("forwarded to"), "{out}");
    eventually("the logging relation in the status", LONG, || {
        t.status("shipped")["integrations"]
            .as_array()?
            .iter()
            .any(|i| i["endpoint"] == "logging" && i["interface"] == "loki_push_api")
            .then_some(())
    });

    // An access-log line of a request made now reaches Loki, from the web service of the
    // unit that served it, labelled like Pebble's own forwarding plus the app and unit.
    let probe = format!("/?probe=loki-{}", std::process::id());
    let entry = eventually("the request's access-log line in Loki", LONG, || {
        if let Some(p) = t.try_port("shipped/1") {
            http_get(p, &probe);
        }
        loki.entries().into_iter().find(|e| {
            e.line.contains(&probe) && e.labels.get("unit").map(String::as_str) == Some("shipped/1")
        })
    });
    assert_eq!(entry.labels["app"], "shipped", "{entry:?}");
    assert_eq!(entry.labels["pebble_service"], "flask", "{entry:?}");
    // The worker's heartbeats arrive too, from both units, in order within each stream.
    let beats = eventually("worker heartbeats from both units", LONG, || {
        let beats: Vec<Entry> = loki
            .entries()
            .into_iter()
            .filter(|e| e.line.contains("worker alive beat="))
            .collect();
        let units: std::collections::BTreeSet<_> =
            beats.iter().map(|e| e.labels["unit"].clone()).collect();
        (units.len() == 2).then_some(beats)
    });
    // Forwarding was switched on without restarting anything.
    for (u, before) in pids_before.iter().enumerate() {
        let unit = format!("shipped/{u}");
        let pids: std::collections::BTreeSet<String> = beats
            .iter()
            .filter(|e| e.labels["unit"] == unit)
            .filter_map(|e| worker_pid(&e.line))
            .collect();
        assert_eq!(
            pids.iter().collect::<Vec<_>>(),
            [before],
            "{unit}'s worker was restarted"
        );
    }
    for unit in ["shipped/0", "shipped/1"] {
        let stamps: Vec<u128> = beats
            .iter()
            .filter(|e| e.labels["unit"] == unit)
            .map(|e| e.nanos)
            .collect();
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "{unit}: {stamps:?}"
        );
    }
    assert!(
        loki.entries()
            .iter()
            .all(|e| !e.line.is_empty() && e.nanos > 1_600_000_000_000_000_000),
        "lines with real timestamps"
    );

    // remove-relation stops the forwarding on every unit.
    t.ok(&["remove-relation", "shipped", "logging"]);
    eventually("the relation gone", LONG, || {
        t.status("shipped")["integrations"]
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i["endpoint"] != "logging"))
            .then_some(())
    });
    // Whatever was queued before the removal may still land; then nothing more does.
    std::thread::sleep(Duration::from_secs(3));
    let settled = loki.entries().len();
    let after = format!("/?probe=after-{}", std::process::id());
    for u in 0..2 {
        if let Some(p) = t.try_port(&format!("shipped/{u}")) {
            http_get(p, &after);
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let entries = loki.entries();
    assert!(
        entries.iter().all(|e| !e.line.contains(&after)),
        "a line logged after remove-relation was forwarded"
    );
    assert!(
        entries.len() <= settled,
        "{} lines arrived after remove-relation",
        entries.len() - settled
    );
}
