//! Zero downtime behind the ingress: a real client keeps requesting while the app changes,
//! and not one request fails.

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(90);

fn all_serve(t: &Twelve, app: &str, n: u32, needle: &str) -> Option<()> {
    for u in 0..n {
        let port = t.try_port(&format!("{app}/{u}"))?;
        http_get(port, "/").filter(|(_, b)| b.contains(needle))?;
    }
    let st = t.status(app);
    st["units"]
        .as_array()?
        .iter()
        .all(|u| u["status"] == "active")
        .then_some(())
}

#[test]
fn config_change_secret_revision_and_scaling_on_three_units_fail_no_request() {
    let t = Twelve::new();
    let src = t.example("flask");
    let out = t.ok(&["deploy", src.to_str().unwrap(), "zd", "-n", "3"]);
    assert!(
        out.contains(&format!("http://zd.localhost:{}", t.ingress_port)),
        "{out}"
    );
    eventually("routing through the ingress", LONG, || {
        via_ingress(&t, "zd", "/").filter(|r| r.0 == 200)
    });
    eventually("3 units in rotation", LONG, || {
        all_serve(&t, "zd", 3, "hello")
    });

    let load = Load::start(&t, "zd");
    std::thread::sleep(Duration::from_millis(500));
    t.ok(&["config", "zd", "greeting=rolled"]);
    eventually("every unit on the new config", LONG, || {
        all_serve(&t, "zd", 3, "rolled")
    });
    // A new revision of a secret the app uses rolls out one unit at a time.
    let uri = t.ok(&["add-secret", "zd-token", "value=first"]);
    t.ok(&["grant-secret", "zd-token", "zd"]);
    t.ok(&["config", "zd", &format!("api-token={}", uri.trim())]);
    let token_everywhere = |value: &str| {
        (0..3).all(|u| {
            t.try_port(&format!("zd/{u}"))
                .and_then(try_app_env)
                .is_some_and(|e| e["FLASK_API_TOKEN_VALUE"] == value)
        })
    };
    eventually("the secret on every unit", LONG, || {
        token_everywhere("first").then_some(())
    });
    t.ok(&["update-secret", "zd-token", "value=second"]);
    eventually("revision 2 on every unit", LONG, || {
        token_everywhere("second").then_some(())
    });
    eventually("every unit active again", LONG, || {
        all_serve(&t, "zd", 3, "rolled")
    });

    t.ok(&["scale-application", "zd", "1"]);
    eventually("one unit left", LONG, || {
        (t.status("zd")["units"].as_array()?.len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed, errors) = load.finish();
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {errors:?}",
        ok + failed
    );
    let (_, body) = via_ingress(&t, "zd", "/").unwrap();
    assert!(body.contains("rolled"), "{body}");
}

#[test]
fn one_unit_config_release_rotation_and_a_broken_release_fail_no_request() {
    let t = Twelve::new();
    let src = t.example("flask");
    let s = src.to_str().unwrap();
    t.ok(&["deploy", s, "one"]);
    eventually("routing through the ingress", LONG, || {
        via_ingress(&t, "one", "/").filter(|r| r.0 == 200)
    });
    let load = Load::start(&t, "one");
    std::thread::sleep(Duration::from_millis(300));

    // A config change: the new instance starts beside the old one.
    t.ok(&["config", "one", "greeting=second"]);
    eventually("the new greeting", LONG, || {
        via_ingress(&t, "one", "/").filter(|r| r.1.contains("second"))
    });

    // A new release.
    let app = std::fs::read_to_string(src.join("app.py")).unwrap();
    std::fs::write(src.join("app.py"), format!("{app}\n# release 2\n")).unwrap();
    let out = t.ok(&["deploy", s, "one"]);
    assert!(out.contains("release 2"), "{out}");
    eventually("release 2 active", LONG, || {
        (t.status("one")["release"] == 2 && t.status("one")["status"] == "active").then_some(())
    });

    // Rotating the secret key.
    let key = |t: &Twelve| {
        via_ingress(t, "one", "/env")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|e| e["FLASK_SECRET_KEY"].as_str().map(str::to_string))
    };
    let before = key(&t).unwrap();
    t.ok(&["run", "one/0", "rotate-secret-key"]);
    eventually("the rotated key", LONG, || key(&t).filter(|k| *k != before));

    // A release that never becomes ready is rolled back; the old one serves throughout.
    std::fs::write(
        src.join("app.py"),
        "raise SystemExit('this release is broken')\n",
    )
    .unwrap();
    t.ok(&["deploy", s, "one", "--no-wait"]);
    let st = eventually("the automatic rollback", LONG, || {
        let st = t.status("one");
        st["message"]
            .as_str()
            .filter(|m| m.contains("rolled back to release 2"))
            .map(|_| st.clone())
    });
    assert_eq!(st["release"], 2, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("did not become ready"),
        "{st}"
    );

    // Scaling out.
    t.ok(&["scale-application", "one", "3"]);
    eventually("3 units in rotation", LONG, || {
        all_serve(&t, "one", 3, "second")
    });
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed, errors) = load.finish();
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {errors:?}",
        ok + failed
    );
}

#[test]
fn an_app_with_no_ready_unit_answers_503_naming_its_status() {
    let t = Twelve::new();
    let src = t.example("flask");
    let charm = src.join("charm/charmcraft.yaml");
    let text = std::fs::read_to_string(&charm).unwrap().replace(
        "      description: An optional token (exported as FLASK_TOKEN when set).\n      type: string\n",
        "      description: A required token.\n      type: string\n      optional: false\n",
    );
    std::fs::write(&charm, text).unwrap();
    t.ok(&["deploy", src.to_str().unwrap(), "gate"]);
    let (code, body) = eventually("the 503 page", LONG, || {
        via_ingress(&t, "gate", "/").filter(|r| r.0 == 503 && r.1.contains("missing options"))
    });
    assert_eq!(code, 503);
    assert!(
        body.contains("gate is blocked: missing options: token"),
        "{body}"
    );
    // The path-prefix form reaches the same app.
    let (code, _) = http_get_host(t.ingress_port, "/gate/", "localhost").unwrap();
    assert_eq!(code, 503);
}
