//! The modes of `TWELVE_HOME`: the store (with its `-wal` and `-shm`), the secrets key and
//! the dashboard token are 0600, the home and `units` are traverse-only, and a user other
//! than the controller's can neither read the store nor list the home.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use twelve_controller::home::Home;
use twelve_controller::store::Store;
use twelve_controller::vault::Vault;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// A home under a directory anyone may traverse (as `/var/lib` is).
fn home() -> (tempfile::TempDir, Home) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = Home::at(tmp.path().join("home"));
    (tmp, home)
}

/// Opens everything a controller opens, and writes to the store (so that the WAL exists).
fn open_all(home: &Home) -> Store {
    home.ensure().unwrap();
    let store = Store::open(&home.db()).unwrap();
    store.set_meta("k", "v").unwrap();
    Vault::open(&home.root.join("secret.key")).unwrap();
    home.web_token().unwrap();
    store
}

fn assert_private(home: &Home) {
    assert_eq!(mode(&home.root), 0o711, "TWELVE_HOME");
    assert_eq!(mode(&home.units()), 0o711, "units");
    for d in ["projects", "ingress"] {
        assert_eq!(mode(&home.root.join(d)), 0o700, "{d}");
    }
    assert_eq!(mode(&home.root.join("services")), 0o711, "services");
    let [db, wal, shm] = Store::files(&home.db());
    for f in [
        db,
        wal,
        shm,
        home.root.join("secret.key"),
        home.web_token_file(),
    ] {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[test]
fn store_key_and_token_are_private_and_the_home_traverse_only() {
    let (_tmp, home) = home();
    let _store = open_all(&home);
    assert_private(&home);
}

#[test]
fn a_home_an_older_twelve_left_readable_is_made_private() {
    let (_tmp, home) = home();
    drop(open_all(&home));
    for f in home.private_files().iter().filter(|f| f.exists()) {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&home.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _store = open_all(&home);
    assert_private(&home);
}

#[test]
fn the_token_is_made_once() {
    let (_tmp, home) = home();
    home.ensure().unwrap();
    assert_eq!(home.read_web_token().unwrap(), None);
    let t = home.web_token().unwrap();
    assert!(t.len() >= 43, "{t}");
    assert_eq!(home.web_token().unwrap(), t);
    assert_eq!(home.read_web_token().unwrap().as_deref(), Some(t.as_str()));
    // Concurrent makers agree on one token.
    let tokens: Vec<String> = std::thread::scope(|s| {
        let (_tmp2, home2) = self::home();
        home2.ensure().unwrap();
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let h = home2.clone();
                s.spawn(move || h.web_token().unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(tokens.iter().all(|t| t == &tokens[0]), "{tokens:?}");
}

/// Runs `sh -c script` as `nobody`; its exit status and stderr.
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
fn another_user_cannot_read_the_store_nor_list_the_home() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to act as nobody");
        return;
    }
    let (_tmp, home) = home();
    let _store = open_all(&home);
    // A unit directory its app may enter (the controller gives it to the app's user).
    let unit = home.unit_dir("web", 0);
    std::fs::create_dir_all(&unit).unwrap();
    std::fs::set_permissions(&unit, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(unit.join("probe"), "ok").unwrap();

    let q = |p: &Path| format!("'{}'", p.display());
    let [db, wal, shm] = Store::files(&home.db());
    for f in [
        &db,
        &wal,
        &shm,
        &home.root.join("secret.key"),
        &home.web_token_file(),
    ] {
        let (ok, err) = as_nobody(&format!("cat {} >/dev/null", q(f)));
        assert!(!ok, "nobody read {}", f.display());
        assert!(err.contains("Permission denied"), "{err}");
    }
    for d in [&home.root, &home.units()] {
        let (ok, err) = as_nobody(&format!("ls {}", q(d)));
        assert!(!ok, "nobody listed {}", d.display());
        assert!(err.contains("Permission denied"), "{err}");
    }
    // ... and still reaches a directory it was given, through both.
    let (ok, err) = as_nobody(&format!("cat {}", q(&unit.join("probe"))));
    assert!(ok, "nobody cannot traverse to its unit directory: {err}");
}
