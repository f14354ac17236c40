//! Rollouts a user can trust: invalid input is refused and changes nothing, a blocked app
//! keeps serving what it runs, a change goes live only once ready everywhere, and a broken
//! one is rolled back by `twelve deploy`, which says why.

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(90);

fn config_values(t: &Twelve, app: &str) -> serde_json::Value {
    serde_json::from_str(&t.ok(&["config", app, "--format", "json"])).unwrap()
}

#[test]
fn invalid_config_is_refused_naming_the_option_and_changes_nothing() {
    let t = Twelve::new();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "val"]);
    eventually("serving through the ingress", LONG, || {
        via_ingress(&t, "val", "/").filter(|r| r.0 == 200)
    });
    let before = config_values(&t, "val");
    let uri = t.ok(&["add-secret", "not-granted", "value=x"]);
    let ungranted = format!("api-token={}", uri.trim());
    for (setting, named) in [
        ("webserver-workers=-5", "invalid options: webserver-workers"),
        ("webserver-workers=lots", "webserver-workers"),
        ("webserver-timeout=0", "invalid options: webserver-timeout"),
        ("api-token=1234", "invalid options: api-token"),
        (
            "api-token=secret:doesnotexist",
            "secret doesnotexist (option api-token) does not exist or is not granted to val",
        ),
        (
            ungranted.as_str(),
            "secret not-granted is not granted to val",
        ),
    ] {
        let err = t.fails(&["config", "val", setting, "greeting=never"]);
        assert!(err.contains(named), "{setting}: {err}");
        assert_eq!(
            err.trim()
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1,
            "one message: {err}"
        );
    }
    assert_eq!(config_values(&t, "val"), before, "nothing stored");
    let st = t.status("val");
    assert_eq!(st["release"], 1, "{st}");
    assert_eq!(st["status"], "active", "{st}");
    let (code, body) = via_ingress(&t, "val", "/").unwrap();
    assert_eq!((code, body.contains("hello")), (200, true), "{body}");
}
