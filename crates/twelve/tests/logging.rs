//! Log forwarding to Loki end to end: `twelve logs APP --forward loki=URL` (the `logging`
//! integration) makes every unit's supervisor push its services' output to a real HTTP
//! receiver that checks the Loki push format; `remove-relation` stops it.

mod common;
mod loki;

use std::time::Duration;

use common::*;
use loki::{Entry, Loki};

const LONG: Duration = Duration::from_secs(90);

#[test]
fn logs_forward_to_loki_with_labels_and_stop_on_remove_relation() {
    let t = Twelve::new();
    let loki = Loki::start(0);
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

/// An `https://` Loki whose certificate a private CA signed: the controller is started with
/// `SSL_CERT_FILE` naming that CA, passes it to the unit supervisors (whose environment is
/// otherwise cleared), and the lines arrive over TLS.
#[test]
fn logs_forward_to_an_https_loki_trusting_the_controllers_ssl_cert_file() {
    let certs = tempfile::tempdir().unwrap();
    loki::certificates(certs.path(), "loki");
    let read = |f: &str| std::fs::read(certs.path().join(f)).unwrap();
    let loki = Loki::start_tls(0, &read("loki-chain.pem"), &read("loki-key.pem"));
    let mut t = Twelve::new();
    let ca = certs.path().join("loki-ca.pem");
    t.env
        .push(("SSL_CERT_FILE".into(), ca.to_str().unwrap().into()));
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "tls"]);
    let url = format!("https://localhost:{}/loki/api/v1/push", loki.port);
    t.ok(&["logs", "tls", "--forward", &format!("loki={url}")]);
    eventually("worker lines in Loki over TLS", LONG, || {
        loki.entries()
            .iter()
            .any(|e| e.line.contains("worker alive"))
            .then_some(())
    });
}

/// `framework_logging_format: json` in paas-config.yaml: gunicorn's access and error logs
/// are one JSON object per line, with the HTTP fields a log collector indexes.
#[test]
fn gunicorn_logs_are_json_lines_with_framework_logging_format_json() {
    let t = Twelve::new();
    let dir = tempfile::Builder::new()
        .prefix("twelve-jsonlog-")
        .tempdir()
        .unwrap();
    copy_dir(&t.example("flask"), dir.path());
    let pc = dir.path().join("charm/paas-config.yaml");
    let text = std::fs::read_to_string(&pc).unwrap();
    std::fs::write(&pc, format!("{text}framework_logging_format: json\n")).unwrap();
    let _ = std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    );
    t.ok(&["deploy", dir.path().to_str().unwrap(), "jl"]);
    let (code, _) = eventually("the app answering", Duration::from_secs(60), || {
        http_get(t.port("jl/0"), "/health?probe=1").filter(|(c, _)| *c == 200)
    });
    assert_eq!(code, 200);
    let line = eventually("a JSON access line", Duration::from_secs(30), || {
        t.ok(&["logs", "jl/0", "flask", "-n", "50"])
            .lines()
            .find(|l| l.contains("probe=1"))
            .map(str::to_string)
    });
    let json = &line[line.find('{').expect("a JSON object on the line")..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["severityText"], "INFO", "{v}");
    assert_eq!(v["attributes"]["http.request.method"], "GET", "{v}");
    assert_eq!(v["attributes"]["url.path"], "/health", "{v}");
    assert_eq!(v["attributes"]["url.query"], "probe=1", "{v}");
    assert_eq!(v["attributes"]["http.response.status_code"], 200, "{v}");
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
    // Error-log lines (gunicorn's own) are JSON too.
    let logs = t.ok(&["logs", "jl/0", "flask", "-n", "200"]);
    let booted = logs
        .lines()
        .find(|l| l.contains("Booting worker"))
        .unwrap_or_else(|| panic!("{logs}"));
    let v: serde_json::Value = serde_json::from_str(&booted[booted.find('{').unwrap()..]).unwrap();
    assert_eq!(v["attributes"]["logger.name"], "gunicorn.error", "{v}");
}

/// `framework_logging_format: json` for FastAPI (paas-charm main configures uvicorn with a
/// log config file): uvicorn's access and error logs are JSON lines in `twelve logs`, and
/// reach Loki as those lines, so its JSON parser gets the fields.
#[test]
fn uvicorn_logs_are_json_lines_in_twelve_logs_and_loki() {
    let t = Twelve::new();
    let loki = Loki::start(0);
    let dir = tempfile::Builder::new()
        .prefix("twelve-jsonlog-")
        .tempdir()
        .unwrap();
    copy_dir(&t.example("fastapi"), dir.path());
    std::fs::write(
        dir.path().join("charm/paas-config.yaml"),
        "framework_logging_format: json\n",
    )
    .unwrap();
    let _ = std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    );
    t.ok(&["deploy", dir.path().to_str().unwrap(), "ju"]);
    t.ok(&["logs", "ju", "--forward", &format!("loki={}", loki.url())]);
    let probe = format!("probe={}", std::process::id());
    let line = eventually("a JSON access line", LONG, || {
        http_get(t.try_port("ju/0")?, &format!("/health?{probe}"));
        t.ok(&["logs", "ju/0", "fastapi", "-n", "50"])
            .lines()
            .find(|l| l.contains(&probe))
            .map(str::to_string)
    });
    let parse = |line: &str| -> serde_json::Value {
        let json = &line[line.find('{').unwrap_or_else(|| panic!("no JSON: {line}"))..];
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let v = parse(&line);
    assert_eq!(v["severityText"], "INFO", "{v}");
    assert_eq!(v["attributes"]["logger.name"], "uvicorn.access", "{v}");
    assert_eq!(v["attributes"]["http.request.method"], "GET", "{v}");
    assert_eq!(v["attributes"]["url.path"], "/health", "{v}");
    assert_eq!(v["attributes"]["url.query"], probe, "{v}");
    assert_eq!(v["attributes"]["http.response.status_code"], 200, "{v}");
    assert_eq!(v["attributes"]["client.address"], "127.0.0.1", "{v}");
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
    // uvicorn's own messages (the error logger) are JSON too.
    let logs = t.ok(&["logs", "ju/0", "fastapi", "-n", "200"]);
    let started = logs
        .lines()
        .find(|l| l.contains("Application startup complete"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(parse(started)["attributes"]["logger.name"], "uvicorn.error");
    // Loki receives the same lines, whole: a `| json` query gets the fields. (Requests
    // made until forwarding is live on the unit.)
    let entry = eventually("an access line in Loki", LONG, || {
        http_get(t.try_port("ju/0")?, &format!("/health?{probe}"));
        loki.entries()
            .into_iter()
            .find(|e| e.line.contains(&probe) && e.line.contains("uvicorn.access"))
    });
    assert_eq!(entry.labels["app"], "ju", "{entry:?}");
    assert_eq!(entry.labels["pebble_service"], "fastapi", "{entry:?}");
    let v = parse(&entry.line);
    assert_eq!(v["attributes"]["url.path"], "/health", "{v}");
    assert_eq!(v["attributes"]["http.response.status_code"], 200, "{v}");
}
