//! What `twelve k8s render` prints for every example validates strictly (no unknown field)
//! against the current Kubernetes schemas (1.37), with PyPI's `kubernetes-validate`, which
//! scripts/setup.sh installs in `$TWELVE_CACHE/kubernetes-validate-venv`. The real API
//! server of the apply tests is 1.20; this checks the objects against today's clusters.

use std::path::{Path, PathBuf};
use std::process::Command;

fn validator() -> PathBuf {
    let cache = std::env::var_os("TWELVE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/twelve")
        });
    let bin = cache.join("kubernetes-validate-venv/bin/kubernetes-validate");
    assert!(
        bin.is_file(),
        "no {}: run scripts/setup.sh (it installs kubernetes-validate from PyPI there)",
        bin.display()
    );
    bin
}

#[test]
fn every_example_renders_objects_valid_for_kubernetes_1_37() {
    let bin = validator();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![];
    for app in [
        "flask",
        "django",
        "fastapi",
        "go",
        "expressjs",
        "spring-boot",
    ] {
        let mut args = vec!["k8s", "render", app, "--reveal", "-n", "2"];
        args.extend(["--domain", "example.com", "--ingress-class", "nginx"]);
        if app == "flask" {
            args.extend(["--scenario", "flask/scenario.yaml"]);
        }
        let django = dir.path().join("django.yaml");
        if app == "django" {
            // Django needs its database to start.
            std::fs::write(
                &django,
                "integrations:\n  postgresql:\n    uri: postgresql://dj:pw@db.example:5432/dj\n",
            )
            .unwrap();
            args.extend(["--scenario", django.to_str().unwrap()]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_twelve"))
            .args(&args)
            .current_dir(&examples)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{app}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = dir.path().join(format!("{app}.yaml"));
        std::fs::write(&f, &out.stdout).unwrap();
        files.push(f);
    }
    let out = Command::new(&bin)
        .args(["--strict", "-k", "1.37.0"])
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // One line per object: every kind twelve renders was checked.
    for kind in [
        "configmap",
        "secret",
        "service",
        "job",
        "statefulset",
        "deployment",
        "ingress",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}/")),
            "{kind} not validated: {text}"
        );
    }
    assert!(!text.contains("failed"), "{text}");
}
