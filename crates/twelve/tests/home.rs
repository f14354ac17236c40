//! `TWELVE_HOME` after a real controller start: its files are the controller's alone
//! (0600, also those created without an explicit mode: the controller's umask is 077),
//! the home and `units` are traverse-only, and another local user can neither read the
//! state store nor list the home.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// `sh -c script` as `nobody`: whether it succeeded, and its stderr.
fn as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["sh", "-c", script])
        .output()
        .expect("setpriv (util-linux)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_started_controller_keeps_its_home_private() {
    let t = Twelve::new();
    t.ok(&["status"]);
    t.web_addr();
    let h = t.home.path();
    assert_eq!(mode(h), 0o711, "TWELVE_HOME");
    assert_eq!(mode(&h.join("units")), 0o711, "units");
    for d in ["ingress", "projects"] {
        assert_eq!(mode(&h.join(d)), 0o700, "{d}");
    }
    for f in [
        "state.db",
        "state.db-wal",
        "state.db-shm",
        "secret.key",
        "web-token",
        "controller.log",
        // Written with no mode of its own: private through the umask.
        "controller.pid",
    ] {
        assert_eq!(mode(&h.join(f)), 0o600, "{f}");
    }
    if !is_root() {
        eprintln!("skipped the check as another user: needs root");
        return;
    }
    let q = |f: &str| format!("'{}'", h.join(f).display());
    for f in ["state.db", "state.db-wal", "secret.key", "web-token"] {
        let (ok, err) = as_nobody(&format!("cat {} >/dev/null", q(f)));
        assert!(
            !ok && err.contains("Permission denied"),
            "nobody read {f}: {err}"
        );
    }
    for d in ["", "units"] {
        let (ok, err) = as_nobody(&format!("ls {}", q(d)));
        assert!(
            !ok && err.contains("Permission denied"),
            "nobody listed '{d}': {err}"
        );
    }
}

#[test]
fn apps_never_see_the_controllers_home_in_their_environment() {
    let t = Twelve::new();
    let src = t.example("go");
    t.ok(&["deploy", src.to_str().unwrap(), "envcheck"]);
    let env = app_env(t.port("envcheck/0"));
    let env = env.as_object().expect("the app's environment as an object");
    assert!(env.contains_key("PATH"), "{env:?}");
    assert!(
        !env.contains_key("TWELVE_HOME"),
        "TWELVE_HOME reached the app: {:?}",
        env.get("TWELVE_HOME")
    );
}
