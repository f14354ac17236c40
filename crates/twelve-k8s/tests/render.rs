//! `render` on the real example projects: exact objects, the ConfigMap/Secret split,
//! probes, workers and schedulers, the migration Job, determinism, YAML that parses back.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};
use twelve_charm::scenario::parse_scenario;
use twelve_charm::{AppState, ServicesAction};
use twelve_k8s::{render, RenderOptions, Rendered};
use twelve_project::Project;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

fn load(name: &str, scenario: Option<&str>) -> (Project, AppState) {
    let project = Project::load(&example(name)).expect("example project loads");
    let src = scenario.unwrap_or("");
    let state = parse_scenario(&project, Path::new("scenario.yaml"), src).expect("scenario");
    (project, state)
}

fn flask_scenario() -> String {
    std::fs::read_to_string(example("flask").join("scenario.yaml")).unwrap()
}

fn flask(opts: &RenderOptions) -> Rendered {
    let (project, state) = load("flask", Some(&flask_scenario()));
    render(&project, &state, opts).unwrap()
}

fn kinds(r: &[Value]) -> Vec<String> {
    r.iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn parse_stream(yaml: &str) -> Vec<Value> {
    yaml.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str::<Value>(d).expect("each document parses"))
        .collect()
}

#[test]
fn flask_objects_in_apply_order() {
    let r = flask(&RenderOptions::default());
    let rel = &r.release;
    assert_eq!(rel.len(), 10);
    assert_eq!(
        kinds(&r.objects),
        [
            format!("ConfigMap flask-example-env-{rel}"),
            format!("ConfigMap flask-example-files-{rel}"),
            format!("Secret flask-example-env-{rel}"),
            "Service flask-example".into(),
            "Service flask-example-endpoints".into(),
            format!("Job flask-example-migrate-{rel}"),
            "StatefulSet flask-example".into(),
            "Deployment flask-example-scheduler".into(),
        ]
    );
    assert_eq!(r.namespace, "default");
    assert_eq!(r.status.services, ServicesAction::Run);
    for o in &r.objects {
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "twelve",
            "{o}"
        );
        assert_eq!(o["metadata"]["labels"]["twelve.dev/release"], rel.as_str());
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/name"],
            "flask-example"
        );
        assert_eq!(o["metadata"]["namespace"], "default");
    }
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("twelve pack --oci --push")));
    assert!(r.notes.iter().any(|n| n.contains("no Ingress")));
}

#[test]
fn secret_values_only_in_the_secret() {
    let r = flask(&RenderOptions::default());
    let cm = find(
        &r.objects,
        "ConfigMap",
        &format!("flask-example-env-{}", r.release),
    );
    let secret = find(
        &r.objects,
        "Secret",
        &format!("flask-example-env-{}", r.release),
    );
    assert_eq!(
        keys(&secret["data"]),
        [
            "FLASK_SECRET_KEY",
            "POSTGRESQL_DB_CONNECT_STRING",
            "POSTGRESQL_DB_NETLOC",
            "POSTGRESQL_DB_PASSWORD",
            "DATABASE_URL"
        ]
    );
    assert_eq!(
        keys(&cm["data"]),
        [
            "FLASK_GREETING",
            "FLASK_TOKEN",
            "FLASK_PREFERRED_URL_SCHEME",
            "FLASK_BASE_URL",
            "FLASK_PEER_FQDNS",
            "POSTGRESQL_DB_SCHEME",
            "POSTGRESQL_DB_PATH",
            "POSTGRESQL_DB_PARAMS",
            "POSTGRESQL_DB_QUERY",
            "POSTGRESQL_DB_FRAGMENT",
            "POSTGRESQL_DB_USERNAME",
            "POSTGRESQL_DB_HOSTNAME",
            "POSTGRESQL_DB_PORT",
            "POSTGRESQL_DB_NAME"
        ]
    );
    assert_eq!(cm["data"]["FLASK_GREETING"], "bonjour");
    assert_eq!(cm["data"]["POSTGRESQL_DB_HOSTNAME"], "127.0.0.1");
    // As applied: base64 in the Secret.
    let b64 = base64::engine::general_purpose::STANDARD;
    let password = b64
        .decode(secret["data"]["POSTGRESQL_DB_PASSWORD"].as_str().unwrap())
        .unwrap();
    assert_eq!(password, b"s3cr3t-pass");
    let url = b64
        .decode(secret["data"]["DATABASE_URL"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        url,
        b"postgresql://flask_example:s3cr3t-pass@127.0.0.1:5432/flask_example"
    );

    // As shown: redacted, and not base64 (a redacted render cannot be applied).
    let shown = r.to_yaml(false).unwrap();
    assert!(!shown.contains("s3cr3t-pass"));
    assert!(!shown.contains(&b64.encode("s3cr3t-pass")));
    assert!(!shown.contains(secret["data"]["DATABASE_URL"].as_str().unwrap()));
    let docs = parse_stream(&shown);
    let shown_secret = find(&docs, "Secret", &format!("flask-example-env-{}", r.release));
    for v in shown_secret["data"].as_object().unwrap().values() {
        assert_eq!(v, "<redacted>");
    }
    // Everything else is shown as is.
    assert_eq!(
        find(
            &docs,
            "ConfigMap",
            &format!("flask-example-env-{}", r.release)
        ),
        cm
    );

    // --reveal: the Secret as applied.
    let revealed = r.to_yaml(true).unwrap();
    assert!(revealed.contains(secret["data"]["POSTGRESQL_DB_PASSWORD"].as_str().unwrap()));
    assert_eq!(parse_stream(&revealed), r.objects);
}

#[test]
fn web_pods_run_the_app_its_workers_and_the_exporter() {
    let r = flask(&RenderOptions::default());
    let sts = find(&r.objects, "StatefulSet", "flask-example");
    assert_eq!(sts["spec"]["replicas"], 3, "the scenario's three units");
    assert_eq!(sts["spec"]["serviceName"], "flask-example-endpoints");
    let pod = &sts["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9102", "prometheus.io/path": "/metrics"})
    );
    let containers = pod["spec"]["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["flask", "heartbeat-worker", "statsd-exporter"]);
    let app = &containers[0];
    assert_eq!(
        app["command"],
        json!([
            "/bin/python3",
            "-m",
            "gunicorn",
            "-c",
            "/flask/gunicorn.conf.py",
            "app:app",
            "-k",
            "sync"
        ])
    );
    assert_eq!(app["workingDir"], "/flask/app");
    assert_eq!(app["securityContext"]["runAsUser"], 584792);
    assert_eq!(
        app["envFrom"],
        json!([{"configMapRef": {"name": format!("flask-example-env-{}", r.release)}}, {"secretRef": {"name": format!("flask-example-env-{}", r.release)}}])
    );
    assert_eq!(
        app["readinessProbe"],
        json!({"httpGet": {"path": "/health", "port": 8000, "scheme": "HTTP"}, "periodSeconds": 2, "failureThreshold": 3})
    );
    assert!(
        app.get("livenessProbe").is_none(),
        "the plan has no alive check"
    );
    assert_eq!(
        app["volumeMounts"],
        json!([{"name": "files", "mountPath": "/flask/gunicorn.conf.py", "subPath": "flask-gunicorn.conf.py", "readOnly": true}])
    );
    let files = find(
        &r.objects,
        "ConfigMap",
        &format!("flask-example-files-{}", r.release),
    );
    assert_eq!(
        files["data"]["flask-gunicorn.conf.py"],
        "bind = ['0.0.0.0:8000']\nchdir = '/flask/app'\naccesslog = '-'\nerrorlog = '-'\nstatsd_host = 'localhost:9125'\nworkers = 2\n"
    );
    assert_eq!(containers[1]["command"], json!(["python3", "worker.py"]));
    assert!(containers[1].get("readinessProbe").is_none());
    assert_eq!(containers[2]["command"][0], "/bin/statsd_exporter");

    // The scheduler: one replica, never two at once.
    let sched = find(&r.objects, "Deployment", "flask-example-scheduler");
    assert_eq!(sched["spec"]["replicas"], 1);
    assert_eq!(sched["spec"]["strategy"], json!({"type": "Recreate"}));
    let sc = &sched["spec"]["template"]["spec"]["containers"];
    assert_eq!(sc.as_array().unwrap().len(), 1);
    assert_eq!(sc[0]["name"], "heartbeat-scheduler");
    assert_eq!(sc[0]["command"], json!(["python3", "scheduler.py"]));
    assert_eq!(sc[0]["envFrom"], app["envFrom"]);

    // The migration Job: same environment, the rock's migration command.
    let job = find(
        &r.objects,
        "Job",
        &format!("flask-example-migrate-{}", r.release),
    );
    assert_eq!(job["spec"]["backoffLimit"], 2);
    let jc = &job["spec"]["template"]["spec"];
    assert_eq!(jc["restartPolicy"], "Never");
    assert_eq!(
        jc["containers"][0]["command"],
        json!(["bash", "-eo", "pipefail", "migrate.sh"])
    );
    assert_eq!(jc["containers"][0]["envFrom"], app["envFrom"]);

    let svc = find(&r.objects, "Service", "flask-example");
    assert_eq!(
        svc["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "targetPort": 8000, "protocol": "TCP"},
            {"name": "app", "port": 8000, "targetPort": 8000, "protocol": "TCP"},
            {"name": "metrics", "port": 9102, "targetPort": 9102, "protocol": "TCP"},
        ])
    );
}

#[test]
fn go_render_is_exactly_the_golden_file() {
    let (project, state) = load("go", None);
    let opts = RenderOptions {
        namespace: Some("prod".into()),
        image: Some("registry.example/go-example:1.0".into()),
        units: Some(2),
        domain: Some("apps.example".into()),
        ingress_class: None,
        generated_secret_key: false,
    };
    let r = render(&project, &state, &opts).unwrap();
    let yaml = r.to_yaml(false).unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/go.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &yaml).unwrap();
    }
    assert_eq!(yaml, std::fs::read_to_string(&golden).unwrap());
    // Deterministic: the same input, the same bytes.
    assert_eq!(
        render(&project, &state, &opts)
            .unwrap()
            .to_yaml(false)
            .unwrap(),
        yaml
    );

    let sts = find(&r.objects, "StatefulSet", "go-example");
    let app = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(app["readinessProbe"]["tcpSocket"], json!({"port": 8080}));
    assert_eq!(app["image"], "registry.example/go-example:1.0");
    assert_eq!(
        app["ports"],
        json!([{"name": "app", "containerPort": 8080, "protocol": "TCP"}]),
        "Go serves metrics on its app port"
    );
    assert!(!r
        .objects
        .iter()
        .any(|o| o["metadata"]["name"] == format!("go-example-files-{}", r.release)));
    let ing = find(&r.objects, "Ingress", "go-example");
    assert_eq!(ing["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(ing["spec"]["rules"][0]["host"], "go-example.apps.example");
    let cm = find(
        &r.objects,
        "ConfigMap",
        &format!("go-example-env-{}", r.release),
    );
    assert_eq!(cm["data"]["APP_BASE_URL"], "http://go-example.apps.example");
    assert_eq!(
        cm["data"]["APP_PEER_FQDNS"],
        "go-example-0.go-example-endpoints.prod.svc.cluster.local,go-example-1.go-example-endpoints.prod.svc.cluster.local"
    );
}

#[test]
fn the_release_follows_what_the_pods_run_not_the_replicas() {
    let base = flask(&RenderOptions::default());
    let scaled = flask(&RenderOptions {
        units: Some(5),
        ..Default::default()
    });
    assert_eq!(base.release, scaled.release);
    assert_eq!(
        find(&scaled.objects, "StatefulSet", "flask-example")["spec"]["replicas"],
        5
    );
    let (project, state) = load("flask", Some(&flask_scenario().replace("bonjour", "hallo")));
    let changed = render(&project, &state, &RenderOptions::default()).unwrap();
    assert_ne!(base.release, changed.release);
    assert_eq!(
        changed.migration_job().unwrap(),
        format!("flask-example-migrate-{}", changed.release)
    );
    let image = flask(&RenderOptions {
        image: Some("reg/flask:2".into()),
        ..Default::default()
    });
    assert_ne!(base.release, image.release);
}

#[test]
fn job_only_with_a_migration() {
    let (project, state) = load("spring-boot", None);
    let r = render(&project, &state, &RenderOptions::default()).unwrap();
    assert!(r.migration_job().is_none());
    assert!(!r.objects.iter().any(|o| o["kind"] == "Job"));
    let (project, state) = load("go", None);
    assert!(render(&project, &state, &RenderOptions::default())
        .unwrap()
        .migration_job()
        .is_some());
}

#[test]
fn django_needs_its_database_and_migrates_with_manage_py() {
    let (project, state) = load("django", None);
    let r = render(&project, &state, &RenderOptions::default()).unwrap();
    assert_eq!(r.status.services, ServicesAction::Stop);
    assert!(r
        .notes
        .iter()
        .any(|n| n.contains("would not start: Django requires a database integration")));

    let scenario = "integrations:\n  postgresql: {uri: 'postgresql://dj:pw-dj-1234@db:5432/dj'}\n";
    let (project, state) = load("django", Some(scenario));
    let r = render(&project, &state, &RenderOptions::default()).unwrap();
    assert_eq!(r.status.services, ServicesAction::Run);
    let job = find(&r.objects, "Job", r.migration_job().unwrap());
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["python3", "manage.py", "migrate"])
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["workingDir"],
        "/django/app"
    );
    let secret = find(
        &r.objects,
        "Secret",
        &format!("django-example-env-{}", r.release),
    );
    assert!(keys(&secret["data"]).contains(&"POSTGRESQL_DB_PASSWORD"));
    let cm = find(
        &r.objects,
        "ConfigMap",
        &format!("django-example-env-{}", r.release),
    );
    assert!(!cm.to_string().contains("pw-dj-1234"));
    assert_eq!(
        cm["data"]["DJANGO_ALLOWED_HOSTS"],
        "[\"django-example.default\"]"
    );
    assert!(!r.to_yaml(false).unwrap().contains("pw-dj-1234"));
}

#[test]
fn an_app_name_kubernetes_refuses_is_one_clear_error() {
    let (project, state) = load("go", Some("app: Go_App\n"));
    let e = render(&project, &state, &RenderOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"Go_App\" is not a valid Kubernetes name: only lowercase letters, digits and '-' are allowed"
    );
}

/// Without `--reveal`, secret *values* are hidden, not every string that happens to contain
/// a short secret: a 3-letter password inside `ConfigMap` or `flask-example-env` leaves
/// kinds and names alone, while the password itself is still never shown.
#[test]
fn a_short_password_redacts_values_not_kinds_or_names() {
    for password in ["fig", "ask", "env", "abc"] {
        let scenario = flask_scenario().replace("s3cr3t-pass", password);
        let (project, state) = load("flask", Some(&scenario));
        let r = render(&project, &state, &RenderOptions::default()).unwrap();
        let shown = r.to_yaml(false).unwrap();
        let docs = parse_stream(&shown);
        assert_eq!(kinds(&docs), kinds(&r.objects), "{password}: {shown}");
        for (real, seen) in r.objects.iter().zip(&docs) {
            if real["kind"] != "Secret" {
                assert_eq!(real, seen, "{password}: {} changed", real["kind"]);
            }
        }
        let secret = find(&docs, "Secret", "flask-example-env");
        for v in secret["data"].as_object().unwrap().values() {
            assert_eq!(v, "<redacted>", "{password}");
        }
        assert!(
            !shown.contains(&format!(":{password}@")),
            "{password}: the password is shown"
        );
    }
}
