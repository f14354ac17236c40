//! Test certificates made with openssl (ECDSA P-256): shared by the ingress's edge tests
//! and the CLI's (`crates/twelve/tests/edge.rs` includes this file by path).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs openssl in `dir`; panics with its error output when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ECDSA P-256 key in `dir/name`.
pub fn make_key(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            name,
        ],
    );
}

/// A test CA in `dir`: `ca.pem`, `ca.key` (valid 2 days); returns the path of `ca.pem`.
pub fn make_ca(dir: &Path) -> PathBuf {
    make_key(dir, "ca.key");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=twelve test CA",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
    );
    dir.join("ca.pem")
}

/// A leaf certificate for `names` signed by the CA of `dir`, valid for `days` (-1:
/// expired): `TAG.pem` (CN=TAG) and `TAG.key`; returns their paths.
pub fn make_leaf_files(dir: &Path, tag: &str, names: &[&str], days: i32) -> (PathBuf, PathBuf) {
    let key = format!("{tag}.key");
    let csr = format!("{tag}.csr");
    let pem = format!("{tag}.pem");
    let ext = format!("{tag}.ext");
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={}\n", sans.join(",")),
    )
    .unwrap();
    make_key(dir, &key);
    let subj = format!("/CN={tag}");
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr],
    );
    let days = days.to_string();
    openssl(
        dir,
        &[
            "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-days", &days,
            "-extfile", &ext, "-out", &pem,
        ],
    );
    (dir.join(pem), dir.join(key))
}
