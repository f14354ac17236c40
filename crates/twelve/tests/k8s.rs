//! `twelve k8s render|apply` as a user runs them. `apply` talks to a **mock** Kubernetes
//! API server (`twelve_k8s::mock`): no real API server can run here (no container
//! runtime, no registry, no cluster); the mock answers server-side apply and Job status as
//! the real one does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use twelve_k8s::mock::{JobOutcome, MockApi, MockConfig};

fn twelve(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_twelve"))
        .args(args)
        .current_dir(examples())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn docs(yaml: &str) -> Vec<Value> {
    yaml.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect()
}

#[test]
fn render_prints_the_objects_with_secrets_redacted_unless_revealed() {
    let (code, out, err) = twelve(&[
        "k8s",
        "render",
        "flask",
        "--scenario",
        "flask/scenario.yaml",
    ]);
    assert_eq!(code, 0, "{err}");
    let objects = docs(&out);
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "ConfigMap",
            "Secret",
            "Service",
            "Service",
            "Job",
            "StatefulSet",
            "Deployment"
        ]
    );
    assert!(!out.contains("s3cr3t-pass"));
    assert_eq!(objects[2]["data"]["POSTGRESQL_DB_PASSWORD"], "<redacted>");
    assert!(err.contains("note: image flask-example:latest"), "{err}");

    let (code, out, _) = twelve(&[
        "k8s",
        "render",
        "flask",
        "--scenario",
        "flask/scenario.yaml",
        "--reveal",
        "-n",
        "2",
        "--namespace",
        "prod",
        "--image",
        "reg/flask:1",
        "--domain",
        "example.com",
    ]);
    assert_eq!(code, 0);
    let objects = docs(&out);
    // base64 of "s3cr3t-pass"
    assert_eq!(
        objects[2]["data"]["POSTGRESQL_DB_PASSWORD"],
        "czNjcjN0LXBhc3M="
    );
    let sts = objects.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    assert_eq!(sts["spec"]["replicas"], 2);
    assert_eq!(sts["metadata"]["namespace"], "prod");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "reg/flask:1"
    );
    let ing = objects.iter().find(|o| o["kind"] == "Ingress").unwrap();
    assert_eq!(ing["spec"]["rules"][0]["host"], "flask-example.example.com");
}

#[test]
fn render_of_a_missing_project_is_one_error() {
    let (code, out, err) = twelve(&["k8s", "render", "no-such-app"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("no-such-app"), "{err}");
    assert_eq!(err.matches("error").count(), 1, "{err}");
}

#[test]
fn apply_without_a_server_says_how_to_give_one() {
    let (code, _, err) = twelve(&["k8s", "apply", "go"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no Kubernetes API server to apply to"),
        "{err}"
    );
    assert!(err.contains("--server"), "{err}");
}

#[test]
fn apply_refuses_an_app_that_would_not_start() {
    let mock = MockApi::start(MockConfig::default());
    let (code, _, err) = twelve(&["k8s", "apply", "django", "--server", &mock.url]);
    assert_eq!(code, 1);
    assert!(
        err.contains("django-example would not start: Django requires a database integration to work (blocked); nothing was applied"),
        "{err}"
    );
    assert!(mock.requests().is_empty());
}

#[test]
fn apply_runs_the_migration_then_the_pods() {
    let mock = MockApi::start(MockConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let (code, out, err) = twelve(&[
        "k8s",
        "apply",
        "go",
        "--server",
        &mock.url,
        "--token-file",
        token.to_str().unwrap(),
        "--namespace",
        "apps",
        "--image",
        "reg/go:1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("APP_SECRET_KEY: a new random key"), "{err}");
    let reqs = mock.requests();
    assert!(reqs
        .iter()
        .all(|q| q.authorization.as_deref() == Some("Bearer s3cret-token")));
    let order: Vec<String> = reqs
        .iter()
        .map(|q| format!("{} {}", q.method, q.target.split('?').next().unwrap()))
        .collect();
    // The secret key is looked for in the running release's Secret (none yet), then in
    // the one twelve named `<app>-env` before releases named them.
    assert_eq!(
        order[..2],
        [
            "GET /apis/apps/v1/namespaces/apps/statefulsets/go-example",
            "GET /api/v1/namespaces/apps/secrets/go-example-env"
        ]
    );
    let job = order
        .iter()
        .position(|l| {
            l.starts_with("PATCH /apis/batch/v1/namespaces/apps/jobs/go-example-migrate-")
        })
        .unwrap();
    let sts = order
        .iter()
        .position(|l| l == "PATCH /apis/apps/v1/namespaces/apps/statefulsets/go-example")
        .unwrap();
    assert!(job < sts, "{order:#?}");
    assert!(order[job + 1].starts_with("GET /apis/batch/v1/namespaces/apps/jobs/"));
    assert!(out.contains("applied StatefulSet apps/go-example"), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("go-example release "),
        "{out}"
    );
    // The generated key is in the applied Secret, never on the terminal.
    let release = out.lines().last().unwrap().split(' ').nth(2).unwrap();
    let secret = mock
        .object(&format!(
            "/api/v1/namespaces/apps/secrets/go-example-env-{release}"
        ))
        .unwrap();
    let key = secret["data"]["APP_SECRET_KEY"].as_str().unwrap();
    assert!(!out.contains(key) && !err.contains(key));
}

#[test]
fn apply_stops_at_a_failed_migration() {
    let mock = MockApi::start(MockConfig {
        job: JobOutcome::Fail,
        ..Default::default()
    });
    let (code, out, err) = twelve(&[
        "k8s",
        "apply",
        "go",
        "--server",
        &mock.url,
        "--namespace",
        "apps",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("error: the migration Job go-example-migrate-"),
        "{err}"
    );
    assert!(err.contains("failed: Job has reached the specified backoff limit; not applied, so the running release is left alone: Service go-example, Service go-example-endpoints, StatefulSet go-example, Deployment go-example-scheduler"), "{err}");
    assert!(!mock
        .requests()
        .iter()
        .any(|q| q.method == "PATCH" && q.target.contains("statefulsets")));
}

#[test]
fn apply_reports_an_unreachable_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, err) = twelve(&["k8s", "apply", "go", "--server", &url]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "error: cannot reach the Kubernetes API server at {url}"
        )),
        "{err}"
    );
}

/// Outgrowing one machine: an app deployed here renders for the cluster with its own
/// config, secrets, integration data, secret key and unit count.
#[test]
fn render_from_a_deployed_app_carries_its_config_secrets_and_integrations() {
    let t = common::Twelve::new();
    let src = t.example("flask");
    let charm = src.join("charm/charmcraft.yaml");
    let mut text = std::fs::read_to_string(&charm).unwrap();
    text.push_str("  s3:\n    interface: s3\n    optional: true\n");
    std::fs::write(&charm, text).unwrap();
    t.ok(&[
        "deploy",
        src.to_str().unwrap(),
        "moving",
        "-n",
        "2",
        "--config",
        "greeting=bonjour",
    ]);
    let uri = t.ok(&["add-secret", "moving-token", "value=tok-3141"]);
    t.ok(&["grant-secret", "moving-token", "moving"]);
    t.ok(&["config", "moving", &format!("api-token={}", uri.trim())]);
    t.ok(&[
        "integrate",
        "moving",
        "s3",
        "--data",
        "access-key=AK",
        "secret-key=SK-2718",
        "bucket=moving-bucket",
        "endpoint=https://s3.example.com",
    ]);
    t.ok(&["deploy", "redis", "cache"]);
    t.ok(&["integrate", "moving", "cache"]);
    let key = common::eventually(
        "the app serving with its secret",
        std::time::Duration::from_secs(90),
        || {
            let env = common::try_app_env(t.try_port("moving/0")?)?;
            (env["FLASK_API_TOKEN_VALUE"] == "tok-3141"
                && env.get("REDIS_DB_CONNECT_STRING").is_some())
            .then(|| env["FLASK_SECRET_KEY"].as_str().map(str::to_string))
            .flatten()
        },
    );

    let out = t.cmd(&[
        "k8s",
        "render",
        "--from-app",
        "moving",
        "--namespace",
        "prod",
        "--image",
        "registry.example.com/moving:1",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("moving:redis points at a server on this machine"),
        "{stderr}"
    );
    for secret in ["tok-3141", "SK-2718", key.as_str()] {
        assert!(!stdout.contains(secret), "{secret} shown without --reveal");
    }
    let objects = docs(&stdout);
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {stdout}"))
            .clone()
    };
    let sts = find("StatefulSet", "moving");
    assert_eq!(sts["spec"]["replicas"], 2, "the app's unit count");
    assert_eq!(sts["metadata"]["namespace"], "prod");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/moving:1"
    );
    let release = sts["metadata"]["labels"]["twelve.dev/release"]
        .as_str()
        .unwrap();
    let env = find("ConfigMap", &format!("moving-env-{release}"));
    assert_eq!(env["data"]["FLASK_GREETING"], "bonjour", "{env}");
    assert_eq!(env["data"]["S3_BUCKET"], "moving-bucket", "{env}");
    assert!(
        env["data"]
            .get("FLASK_BASE_URL")
            .is_none_or(|u| !u.as_str().unwrap_or("").contains("localhost")),
        "this machine's URL stays here: {env}"
    );

    // With --reveal, the Secret holds the very values the local app has.
    let out = t.cmd(&["k8s", "render", "--from-app", "moving", "--reveal"]);
    assert!(out.status.success());
    let revealed = docs(&String::from_utf8_lossy(&out.stdout));
    let secret = revealed
        .iter()
        .find(|o| o["kind"] == "Secret")
        .expect("a Secret");
    let decode = |k: &str| {
        use base64::Engine;
        let b = secret["data"][k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in {secret}"));
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).unwrap()).unwrap()
    };
    assert_eq!(decode("FLASK_API_TOKEN_VALUE"), "tok-3141");
    assert_eq!(decode("S3_SECRET_KEY"), "SK-2718");
    assert_eq!(
        decode("FLASK_SECRET_KEY"),
        key,
        "the same secret key: sessions survive the move"
    );

    let err = t.fails(&["k8s", "render", "--from-app", "nosuch"]);
    assert!(err.contains("nosuch"), "{err}");
    t.ok(&["remove-relation", "moving", "cache", "--destroy-data"]);
    t.ok(&["remove-application", "cache", "--destroy-data"]);
}
