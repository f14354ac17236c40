//! `apply` against a **mock** Kubernetes API server (`twelve_k8s::mock`): no real API
//! server can run here (no container runtime, no registry, no cluster), so these tests
//! check what twelve sends (server-side apply PATCHes to the right REST paths, in order,
//! with the field manager and the token) and how it reacts to the answers a real server
//! gives (the applied object, Job status, `Status` errors), not Kubernetes itself.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use twelve_charm::scenario::parse_scenario;
use twelve_k8s::mock::{JobOutcome, MockApi, MockConfig};
use twelve_k8s::{apply_all, ApplyError, ApplyOptions, Client, RenderOptions, Rendered, Target};
use twelve_project::Project;

fn flask() -> Rendered {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flask");
    let project = Project::load(&dir).unwrap();
    let src = std::fs::read_to_string(dir.join("scenario.yaml")).unwrap();
    let state = parse_scenario(&project, Path::new("scenario.yaml"), &src).unwrap();
    let opts = RenderOptions {
        namespace: Some("apps".into()),
        domain: Some("example.com".into()),
        ..Default::default()
    };
    twelve_k8s::render(&project, &state, &opts).unwrap()
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        dry_run: false,
        migration_timeout: Duration::from_secs(3600),
        poll_interval: Duration::from_millis(10),
        force_conflicts: false,
    }
}

fn client(url: &str) -> Client {
    Client::new(Target {
        server: url.to_string(),
        token: Some("t0ken".into()),
        ..Default::default()
    })
    .unwrap()
}

async fn run(
    mock: &MockApi,
    r: &Rendered,
    o: &ApplyOptions,
) -> (Result<(), ApplyError>, Vec<String>) {
    let mut lines = vec![];
    let res = apply_all(&client(&mock.url), &r.objects, o, &mut |l| lines.push(l)).await;
    (res, lines)
}

#[tokio::test]
async fn applies_every_object_server_side_in_order_after_the_migration() {
    let mock = MockApi::start(MockConfig::default());
    let r = flask();
    let (res, lines) = run(&mock, &r, &opts()).await;
    res.unwrap();
    let job = format!("flask-example-migrate-{}", r.release);
    let rel = &r.release;
    let seen: Vec<String> = mock
        .requests()
        .iter()
        .map(|q| format!("{} {}", q.method, q.target))
        .filter(|q| !q.contains("labelSelector="))
        .collect();
    let ssa = "?fieldManager=twelve";
    assert_eq!(
        seen,
        [
            "GET /apis/apps/v1/namespaces/apps/statefulsets/flask-example".to_string(),
            format!("PATCH /api/v1/namespaces/apps/configmaps/flask-example-env-{rel}{ssa}"),
            format!("PATCH /api/v1/namespaces/apps/configmaps/flask-example-files-{rel}{ssa}"),
            format!("PATCH /api/v1/namespaces/apps/secrets/flask-example-env-{rel}{ssa}"),
            format!("GET /apis/batch/v1/namespaces/apps/jobs/{job}"),
            format!("PATCH /apis/batch/v1/namespaces/apps/jobs/{job}{ssa}"),
            format!("GET /apis/batch/v1/namespaces/apps/jobs/{job}"),
            format!("GET /apis/batch/v1/namespaces/apps/jobs/{job}"),
            format!("PATCH /api/v1/namespaces/apps/services/flask-example{ssa}"),
            format!("PATCH /api/v1/namespaces/apps/services/flask-example-endpoints{ssa}"),
            format!("PATCH /apis/apps/v1/namespaces/apps/statefulsets/flask-example{ssa}"),
            format!("PATCH /apis/apps/v1/namespaces/apps/deployments/flask-example-scheduler{ssa}"),
            format!(
                "PATCH /apis/networking.k8s.io/v1/namespaces/apps/ingresses/flask-example{ssa}"
            ),
        ]
    );
    for q in mock.requests() {
        assert_eq!(q.authorization.as_deref(), Some("Bearer t0ken"));
        if q.method == "PATCH" {
            assert_eq!(
                q.content_type.as_deref(),
                Some("application/apply-patch+yaml")
            );
        }
    }
    // The Secret is sent with its values, base64.
    let secret = mock
        .object(&format!(
            "/api/v1/namespaces/apps/secrets/flask-example-env-{rel}"
        ))
        .unwrap();
    let pw = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["POSTGRESQL_DB_PASSWORD"].as_str().unwrap())
        .unwrap();
    assert_eq!(pw, b"s3cr3t-pass");
    let sts = mock
        .object("/apis/apps/v1/namespaces/apps/statefulsets/flask-example")
        .unwrap();
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(
        lines[0],
        format!("applied ConfigMap apps/flask-example-env-{rel} (resourceVersion 1)")
    );
    assert!(lines.contains(&format!("migration Job apps/{job} succeeded")));
}

#[tokio::test]
async fn a_failed_migration_stops_before_the_pods() {
    let mock = MockApi::start(MockConfig {
        job: JobOutcome::Fail,
        ..Default::default()
    });
    let r = flask();
    let (res, _) = run(&mock, &r, &opts()).await;
    let e = res.unwrap_err();
    let job = format!("flask-example-migrate-{}", r.release);
    assert_eq!(
        e.to_string(),
        format!("the migration Job {job} failed: Job has reached the specified backoff limit; not applied, so the running release is left alone: Service flask-example, Service flask-example-endpoints, StatefulSet flask-example, Deployment flask-example-scheduler, Ingress flask-example (see `kubectl logs -n apps job/{job}`; applying again reruns the migration)")
    );
    assert!(!mock.requests().iter().any(|q| q.method == "PATCH"
        && (q.target.contains("statefulsets") || q.target.contains("deployments"))));
}

#[tokio::test]
async fn a_migration_that_does_not_finish_times_out() {
    let mock = MockApi::start(MockConfig {
        job: JobOutcome::Hang,
        ..Default::default()
    });
    let o = ApplyOptions {
        migration_timeout: Duration::ZERO,
        ..opts()
    };
    let (res, _) = run(&mock, &flask(), &o).await;
    assert!(
        matches!(res, Err(ApplyError::MigrationTimeout { .. })),
        "{res:?}"
    );
    assert!(!mock
        .requests()
        .iter()
        .any(|q| q.method == "PATCH" && q.target.contains("statefulsets")));
}

#[tokio::test]
async fn an_api_error_names_the_object_and_the_server_message() {
    let mock = MockApi::start(MockConfig {
        reject: Some((
            "/statefulsets/flask-example?".into(),
            422,
            "StatefulSet.apps \"flask-example\" is invalid: spec.template.spec.containers[0].image: Required value".into(),
        )),
        ..Default::default()
    });
    let (res, _) = run(&mock, &flask(), &opts()).await;
    assert_eq!(
        res.unwrap_err().to_string(),
        format!("cannot apply StatefulSet flask-example in namespace apps: the API server at {} answered 422: StatefulSet.apps \"flask-example\" is invalid: spec.template.spec.containers[0].image: Required value", mock.url)
    );
    let forbidden = MockApi::start(MockConfig {
        reject: Some((
            "/configmaps/".into(),
            403,
            "configmaps \"flask-example-env-x\" is forbidden: User \"system:anonymous\" cannot patch resource".into(),
        )),
        ..Default::default()
    });
    let (res, _) = run(&forbidden, &flask(), &opts()).await;
    let e = res.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "cannot apply ConfigMap flask-example-env-{} in namespace apps",
            flask().release
        )),
        "{e}"
    );
    assert!(
        e.contains("answered 403: configmaps \"flask-example-env-x\" is forbidden"),
        "{e}"
    );
    assert_eq!(
        forbidden.requests().len(),
        2,
        "the running release's StatefulSet read, then nothing after the first error"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_one_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let r = flask();
    let res = apply_all(&client(&url), &r.objects, &opts(), &mut |_| {}).await;
    let e = res.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "cannot reach the Kubernetes API server at {url}: "
        )),
        "{e}"
    );
    assert!(e.to_lowercase().contains("refused"), "{e}");
    let bad = Client::new(Target {
        server: "k8s.example:6443".into(),
        ..Default::default()
    });
    assert!(matches!(bad, Err(ApplyError::BadServer(_))));
}

#[tokio::test]
async fn dry_run_asks_the_server_to_validate_only() {
    let mock = MockApi::start(MockConfig::default());
    let o = ApplyOptions {
        dry_run: true,
        ..opts()
    };
    let (res, lines) = run(&mock, &flask(), &o).await;
    res.unwrap();
    let reqs: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|q| q.method != "GET")
        .collect();
    assert_eq!(reqs.len(), 9, "one PATCH per object, no Job polling");
    assert!(reqs
        .iter()
        .all(|q| q.method == "PATCH" && q.target.ends_with("&dryRun=All")));
    assert!(!mock
        .requests()
        .iter()
        .any(|q| q.method == "GET" && q.target.contains("/jobs/")));
    assert!(mock.requests().iter().all(|q| q.method != "DELETE"));
    assert!(lines[0].ends_with("(dry run: validated, not stored)"));
}

#[tokio::test]
async fn the_secret_key_in_the_cluster_is_kept() {
    let mock = MockApi::start(MockConfig::default());
    let c = client(&mock.url);
    let (fresh, kept) = twelve_k8s::cluster_secret_key(&c, "apps", "web", "FLASK_SECRET_KEY")
        .await
        .unwrap();
    assert!(!kept);
    assert_eq!(fresh.len(), 50);
    mock.put(
        "/api/v1/namespaces/apps/secrets/web-env",
        json!({"kind": "Secret", "data": {"FLASK_SECRET_KEY": base64::engine::general_purpose::STANDARD.encode("old-key")}}),
    );
    let (key, kept) = twelve_k8s::cluster_secret_key(&c, "apps", "web", "FLASK_SECRET_KEY")
        .await
        .unwrap();
    assert!(kept);
    assert_eq!(key, "old-key");
}

#[tokio::test]
async fn https_speaks_tls_and_says_so_when_the_server_does_not() {
    let mock = MockApi::start(MockConfig::default());
    let url = mock.url.replace("http://", "https://");
    for insecure in [false, true] {
        let c = Client::new(Target {
            server: url.clone(),
            insecure,
            ..Default::default()
        })
        .unwrap();
        let e = c
            .get("v1", "Secret", "apps", "web-env")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "cannot reach the Kubernetes API server at {url}: TLS: "
            )),
            "{e}"
        );
    }
    let bad_ca = Client::new(Target {
        server: url,
        ca_pem: Some(b"not a certificate".to_vec()),
        ..Default::default()
    });
    assert!(bad_ca.is_err());
}
