//! Secrets and actions end to end: the seed's workflow word for word on a real Flask app,
//! revisions rolling out, grants, the plaintext-nowhere check, and actions.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);
const VALUE: &str = "Sx7-plaintext-1234-qwz";
const OTHER: &str = "Sx7-plaintext-5678-qwz";
const NEXT: &str = "Sx7-plaintext-9999-qwz";

fn grep_tree(dir: &Path, needle: &str, hits: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_symlink() {
            continue;
        }
        if ft.is_dir() {
            grep_tree(&p, needle, hits);
        } else if ft.is_file() {
            if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
}

fn env_of(t: &Twelve, unit: &str) -> serde_json::Value {
    let port = t.port(unit);
    eventually("the app answering /env", LONG, || try_app_env(port))
}

#[test]
fn the_seed_secret_workflow_rolls_out_and_never_leaks() {
    let t = Twelve::new();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "web"]);

    let uri = t.ok(&[
        "add-secret",
        "my-api-token",
        &format!("value={VALUE}"),
        &format!("othervalue={OTHER}"),
        "--info",
        "for the API",
    ]);
    let uri = uri.trim().to_string();
    assert!(uri.starts_with("secret:") && uri.len() == 27, "{uri}");
    let err = t.fails(&["add-secret", "my-api-token", "value=x"]);
    assert!(err.contains("already exists"), "{err}");

    // Configured before it is granted: refused; nothing changes.
    let err = t.fails(&["config", "web", &format!("api-token={uri}")]);
    assert!(
        err.contains("secret my-api-token is not granted to web"),
        "{err}"
    );
    t.ok(&["grant-secret", "my-api-token", "web"]);
    t.ok(&["config", "web", &format!("api-token={uri}")]);
    let env = eventually("the secret's keys in the app env", LONG, || {
        let port = t.port("web/0");
        try_app_env(port).filter(|e| e["FLASK_API_TOKEN_VALUE"] == VALUE)
    });
    assert_eq!(env["FLASK_API_TOKEN_OTHERVALUE"], OTHER);

    // A new revision rolls out.
    let out = t.ok(&["update-secret", "my-api-token", &format!("value={NEXT}")]);
    assert!(out.contains("revision 2"), "{out}");
    eventually("revision 2 in the app env", LONG, || {
        try_app_env(t.port("web/0")).filter(|e| e["FLASK_API_TOKEN_VALUE"] == NEXT)
    });

    // Listing and showing never print values unless asked.
    let list = t.ok(&["secrets", "--format", "json"]);
    assert!(
        list.contains("my-api-token") && list.contains("\"web\""),
        "{list}"
    );
    let shown = t.ok(&["show-secret", "my-api-token"]);
    assert!(
        shown.contains("<redacted>") && !shown.contains(NEXT),
        "{shown}"
    );
    let revealed = t.ok(&["show-secret", "my-api-token", "--reveal", "--revision", "1"]);
    assert!(
        revealed.contains(VALUE) && revealed.contains(OTHER),
        "{revealed}"
    );
    let status = t.ok(&["status", "--format", "json"]);
    for secret in [VALUE, OTHER, NEXT] {
        assert!(!status.contains(secret) && !list.contains(secret));
    }

    // A value that is not a secret URI is an invalid option: refused.
    let err = t.fails(&["config", "web", "api-token=1234"]);
    assert!(err.contains("invalid options: api-token"), "{err}");

    // Revoked: blocked, and the app keeps serving what it runs.
    t.ok(&["revoke-secret", "my-api-token", "web"]);
    eventually("blocked after revoke", LONG, || {
        (t.status("web")["message"]
            .as_str()?
            .starts_with("secret my-api-token is not granted to web"))
        .then_some(())
    });

    // The plaintext is nowhere on disk: store, logs, unit directories.
    for secret in [VALUE, OTHER, NEXT] {
        let mut hits = vec![];
        grep_tree(t.home.path(), secret, &mut hits);
        assert!(hits.is_empty(), "{secret} found in {hits:?}");
    }

    t.ok(&["remove-secret", "my-api-token"]);
    let err = t.fails(&["show-secret", "my-api-token"]);
    assert!(err.contains("secret \"my-api-token\" not found"), "{err}");
}

#[test]
fn rotate_secret_key_changes_the_key_on_every_unit() {
    let t = Twelve::new();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "rot", "-n", "2"]);
    let before: Vec<String> = ["rot/0", "rot/1"]
        .iter()
        .map(|u| {
            env_of(&t, u)["FLASK_SECRET_KEY"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(before[0], before[1], "one key shared by all units");
    let err = t.fails(&["run", "rot/1", "rotate-secret-key"]);
    assert!(
        err.contains("only leader unit can rotate secret key"),
        "{err}"
    );
    let out = t.ok(&["run", "rot/0", "rotate-secret-key", "--format", "json"]);
    assert!(out.contains("\"status\": \"success\""), "{out}");
    for unit in ["rot/0", "rot/1"] {
        let after = eventually("the new key", LONG, || {
            try_app_env(t.port(unit))
                .and_then(|e| e["FLASK_SECRET_KEY"].as_str().map(str::to_string))
                .filter(|k| *k != before[0])
        });
        assert!(after.len() >= 64);
    }
    let keys: Vec<String> = ["rot/0", "rot/1"]
        .iter()
        .map(|u| {
            env_of(&t, u)["FLASK_SECRET_KEY"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(keys[0], keys[1]);
}

#[test]
fn project_actions_run_with_params_and_report_results() {
    let t = Twelve::new();
    let src = t.example("flask");
    let charm = src.join("charm/charmcraft.yaml");
    let mut text = std::fs::read_to_string(&charm).unwrap();
    text.push_str(
        "\nactions:\n  greet:\n    description: Say hello.\n    params:\n      name: {type: string, description: who}\n      times: {type: integer}\n    required: [name]\n  explode:\n    description: Always fails.\n",
    );
    std::fs::write(&charm, text).unwrap();
    std::fs::create_dir_all(src.join("actions")).unwrap();
    std::fs::write(
        src.join("actions/greet.sh"),
        "#!/bin/bash\necho \"{\\\"greeting\\\": \\\"$FLASK_GREETING $ACTION_PARAM_NAME\\\", \\\"times\\\": \\\"${ACTION_PARAM_TIMES:-1}\\\"}\"\n",
    )
    .unwrap();
    std::fs::write(
        src.join("actions/explode.py"),
        "import sys\nprint('it went wrong')\nsys.exit(4)\n",
    )
    .unwrap();
    t.ok(&["deploy", src.to_str().unwrap(), "act"]);

    let listing = t.ok(&["actions", "act"]);
    assert!(
        listing.contains("greet")
            && listing.contains("name:string*")
            && listing.contains("rotate-secret-key"),
        "{listing}"
    );
    let out = t.ok(&[
        "run",
        "act/0",
        "greet",
        "name=world",
        "times=2",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["greeting"], "hello world");
    assert_eq!(v["times"], "2");

    let err = t.fails(&["run", "act/0", "greet"]);
    assert!(err.contains("greet needs name"), "{err}");
    let err = t.fails(&["run", "act/0", "greet", "name=x", "times=many"]);
    assert!(err.contains("expected an integer"), "{err}");
    let err = t.fails(&["run", "act/0", "greet", "name=x", "colour=red"]);
    assert!(err.contains("unknown parameter \"colour\""), "{err}");
    let err = t.fails(&["run", "act/0", "explode"]);
    assert!(
        err.contains("exit code 4") && err.contains("it went wrong"),
        "{err}"
    );
    let err = t.fails(&["run", "act/0", "dance"]);
    assert!(
        err.contains("has no action \"dance\"") && err.contains("greet"),
        "{err}"
    );
    let err = t.fails(&["run", "act/5", "greet", "name=x"]);
    assert!(err.contains("unit act/5 not found"), "{err}");
    let err = t.fails(&["add-secret", "s", "novalue"]);
    assert!(err.contains("not key=value"), "{err}");
    let err = t.fails(&["grant-secret", "nope", "act"]);
    assert!(err.contains("secret \"nope\" not found"), "{err}");
}
