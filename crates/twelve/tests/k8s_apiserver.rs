//! `twelve k8s apply` against a **real** Kubernetes API server: kube-apiserver v1.20.2 with
//! etcd on 127.0.0.1, started by `scripts/kube-apiserver.sh` (built once by
//! `scripts/setup.sh` and cached in `$TWELVE_CACHE/kube-apiserver`). There is no
//! controller-manager or kubelet, so no pod runs: a thread of the test stands in for the
//! Job controller and marks migration Jobs succeeded or failed through the status
//! subresource. Everything else is the API server's own: validation, server-side apply,
//! field ownership, storage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use twelve_k8s::{Client, Target};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A kube-apiserver + etcd of this test; stopped on drop.
struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    token: String,
    ca: Vec<u8>,
    server: String,
}

impl Cluster {
    fn start() -> Cluster {
        let script = repo().join("scripts/kube-apiserver.sh");
        let path = Command::new(&script).arg("path").output().unwrap();
        assert!(
            path.status.success(),
            "no kube-apiserver in $TWELVE_CACHE/kube-apiserver: run scripts/setup.sh (it builds and caches one)"
        );
        let dir = tempfile::tempdir().unwrap();
        let api = free_port();
        let out = Command::new(&script)
            .args(["start", dir.path().to_str().unwrap()])
            .env("API_PORT", api.to_string())
            .env("ETCD_PORT", free_port().to_string())
            .env("ETCD_PEER", free_port().to_string())
            .output()
            .unwrap();
        let cluster = Cluster {
            kubeconfig: dir.path().join("kubeconfig"),
            token: std::fs::read_to_string(dir.path().join("pki/tokens.csv"))
                .unwrap_or_default()
                .split(',')
                .next()
                .unwrap_or_default()
                .to_string(),
            ca: std::fs::read(dir.path().join("pki/ca.crt")).unwrap_or_default(),
            server: format!("https://127.0.0.1:{api}"),
            dir,
        };
        assert!(
            out.status.success(),
            "kube-apiserver did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn client(&self) -> Client {
        Client::new(Target {
            server: self.server.clone(),
            token: Some(self.token.clone()),
            ca_pem: Some(self.ca.clone()),
            ..Default::default()
        })
        .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/kube-apiserver.sh"))
            .args(["stop", self.dir.path().to_str().unwrap()])
            .output();
    }
}

const SUCCEED: u8 = 0;
const FAIL: u8 = 1;

/// Stands in for the Job controller: marks every Job of `ns` that has no outcome yet
/// succeeded (or failed, per `mode`), until dropped.
struct JobController {
    stop: Arc<AtomicBool>,
    mode: Arc<AtomicU8>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JobController {
    fn start(cluster: &Cluster, ns: &str) -> JobController {
        let stop = Arc::new(AtomicBool::new(false));
        let mode = Arc::new(AtomicU8::new(SUCCEED));
        let client = cluster.client();
        let ns = ns.to_string();
        let (s, m) = (stop.clone(), mode.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            while !s.load(Ordering::SeqCst) {
                rt.block_on(complete_jobs(&client, &ns, m.load(Ordering::SeqCst)));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        JobController {
            stop,
            mode,
            thread: Some(thread),
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

impl Drop for JobController {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn complete_jobs(client: &Client, ns: &str, mode: u8) {
    let Ok(jobs) = client
        .list("batch/v1", "Job", ns, "app.kubernetes.io/managed-by=twelve")
        .await
    else {
        return;
    };
    let now = "2026-01-01T00:00:00Z";
    for job in jobs {
        let status = &job["status"];
        if status["succeeded"].as_u64().unwrap_or(0) > 0
            || status["failed"].as_u64().unwrap_or(0) > 0
        {
            continue;
        }
        let patch = if mode == FAIL {
            json!({"status": {"failed": 3, "conditions": [{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit",
                "lastProbeTime": now, "lastTransitionTime": now}]}})
        } else {
            json!({"status": {"succeeded": 1, "startTime": now, "completionTime": now,
                "conditions": [{"type": "Complete", "status": "True",
                "lastProbeTime": now, "lastTransitionTime": now}]}})
        };
        let name = job["metadata"]["name"].as_str().unwrap_or_default();
        let _ = client
            .request(
                "PATCH",
                &format!(
                    "/apis/batch/v1/namespaces/{ns}/jobs/{name}/status?fieldManager=job-controller"
                ),
                Some("application/merge-patch+json"),
                patch.to_string().into_bytes(),
            )
            .await;
    }
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

/// Runs twelve in the examples directory with `env` (HOME is always a home of the test's,
/// KUBECONFIG only when given).
fn twelve(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_twelve"));
    cmd.args(args)
        .current_dir(repo().join("examples"))
        .env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into(),
        err: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn docs(yaml: &str) -> Vec<Value> {
    yaml.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect()
}

/// Every field of `want` is in `have` with the same value (the server adds defaults).
fn subset(want: &Value, have: &Value, at: &str) -> Result<(), String> {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (k, v) in w {
                let Some(hv) = h.get(k) else {
                    return Err(format!("{at}.{k} missing"));
                };
                subset(v, hv, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(h)) => {
            if w.len() != h.len() {
                return Err(format!(
                    "{at}: {} items, the server has {}",
                    w.len(),
                    h.len()
                ));
            }
            for (i, (a, b)) in w.iter().zip(h).enumerate() {
                subset(a, b, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        _ if want == have => Ok(()),
        _ => Err(format!("{at}: rendered {want}, the server has {have}")),
    }
}

fn release_of(out: &str) -> String {
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("flask-example release "), "{out}");
    last.split(' ').nth(2).unwrap().to_string()
}

/// The scenario: the Flask example with a PostgreSQL integration (examples/flask/scenario.yaml),
/// with `greeting`.
fn scenario(dir: &Path, greeting: &str) -> PathBuf {
    let src = std::fs::read_to_string(repo().join("examples/flask/scenario.yaml")).unwrap();
    let path = dir.join(format!("scenario-{greeting}.yaml"));
    std::fs::write(
        &path,
        src.replace("greeting: bonjour", &format!("greeting: {greeting}")),
    )
    .unwrap();
    path
}

#[test]
fn apply_to_a_real_api_server() {
    let cluster = Cluster::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = cluster.client();
    let ns = "apps";
    let (status, body) = rt
        .block_on(
            api.request(
                "POST",
                "/api/v1/namespaces",
                Some("application/json"),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let jobs = JobController::start(&cluster, ns);
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    let kc = cluster.kubeconfig.as_path();
    let s1 = scenario(tmp.path(), "bonjour");
    let s1 = s1.to_str().unwrap();
    let common = ["--namespace", ns, "--image", "registry.example/flask:1"];
    let get = |kind: &str, api_version: &str, name: &str| {
        rt.block_on(api.get(api_version, kind, ns, name)).unwrap()
    };
    let all = || -> BTreeMap<String, (String, Value)> {
        let mut m = BTreeMap::new();
        for (v, kind) in twelve_k8s::apply::PRUNED_KINDS {
            for o in rt
                .block_on(api.list(v, kind, ns, "app.kubernetes.io/managed-by=twelve"))
                .unwrap()
            {
                let name = o["metadata"]["name"].as_str().unwrap().to_string();
                let rv = o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string();
                m.insert(format!("{kind} {name}"), (rv, o));
            }
        }
        m
    };
    let home_env = [("HOME", home.as_path())];
    let with_kubeconfig_env = [("HOME", home.as_path()), ("KUBECONFIG", kc)];

    // 1. render, apply --dry-run and apply name the same release (no secret key in the
    // scenario: apply generates one and keeps it in the cluster), here through $KUBECONFIG.
    let mut args = vec!["k8s", "render", "flask", "--scenario", s1, "--reveal"];
    args.extend(common);
    args.extend(["--domain", "example.com"]);
    let render = twelve(&args, &home_env);
    assert_eq!(render.code, 0, "{}", render.err);
    let rendered = docs(&render.out);
    let r0 = rendered[0]["metadata"]["labels"]["twelve.dev/release"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = vec!["k8s", "apply", "flask", "--scenario", s1];
    args.extend(common);
    args.extend(["--domain", "example.com"]);
    let dry = twelve(&[&args[..], &["--dry-run"]].concat(), &with_kubeconfig_env);
    assert_eq!(dry.code, 0, "{}", dry.err);
    assert!(
        dry.out.contains(&format!(
            "applied ConfigMap apps/flask-example-env-{r0} (dry run"
        )),
        "{}",
        dry.out
    );
    assert!(all().is_empty(), "a dry run stores nothing");
    let first = twelve(&args, &with_kubeconfig_env);
    assert_eq!(first.code, 0, "{}{}", first.out, first.err);
    assert_eq!(release_of(&first.out), r0, "apply names render's release");
    assert!(first.out.contains(&format!(
        "migration Job apps/flask-example-migrate-{r0} succeeded"
    )));

    // 2. Every rendered object is on the server as rendered, owned by twelve (Apply).
    let live = all();
    assert_eq!(live.len(), rendered.len(), "{:?}", live.keys());
    let mut secret_key = String::new();
    for want in &rendered {
        let (_, kind, _, name) = twelve_k8s::apply::identity(want);
        let (_, have) = &live[&format!("{kind} {name}")];
        let mut want = want.clone();
        if kind == "Secret" {
            // The key apply generated, not render's placeholder.
            let key = have["data"]["FLASK_SECRET_KEY"].as_str().unwrap();
            secret_key = key.to_string();
            assert_ne!(want["data"]["FLASK_SECRET_KEY"], key);
            want["data"]["FLASK_SECRET_KEY"] = key.into();
        }
        // List items carry no apiVersion and kind (the list says them).
        let fields = want.as_object_mut().unwrap();
        fields.remove("apiVersion");
        fields.remove("kind");
        subset(&want, have, &format!("{kind} {name}")).unwrap();
        let managers: Vec<(&str, &str)> = have["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["manager"].as_str().unwrap(),
                    m["operation"].as_str().unwrap(),
                )
            })
            .filter(|(m, _)| *m == "twelve")
            .collect();
        assert_eq!(managers, [("twelve", "Apply")], "{kind} {name}");
    }
    let sts = get("StatefulSet", "apps/v1", "flask-example").unwrap();
    assert_eq!(sts["spec"]["replicas"], 3);

    // 3. Applying again writes nothing: through ~/.kube/config, with --context naming the
    // client-certificate user.
    std::fs::copy(kc, home.join(".kube/config")).unwrap();
    let again = twelve(&[&args[..], &["--context", "cert"]].concat(), &home_env);
    assert_eq!(again.code, 0, "{}{}", again.out, again.err);
    assert!(
        again.err.contains("kept from the app's Secret"),
        "{}",
        again.err
    );
    assert_eq!(release_of(&again.out), r0);
    assert!(!again.out.contains("pruned"), "{}", again.out);
    let versions = |m: &BTreeMap<String, (String, Value)>| -> Vec<(String, String)> {
        m.iter()
            .map(|(k, (rv, _))| (k.clone(), rv.clone()))
            .collect()
    };
    assert_eq!(versions(&all()), versions(&live), "the re-apply wrote");

    // 4. A config change (and --domain dropped): a new release with its own environment;
    // the previous release's environment stays until its pods are gone, the old Job and
    // the Ingress are pruned.
    let s2 = scenario(tmp.path(), "hello");
    let mut args2 = vec!["k8s", "apply", "flask", "--scenario", s2.to_str().unwrap()];
    args2.extend(common);
    let change = twelve(&args2, &with_kubeconfig_env);
    assert_eq!(change.code, 0, "{}{}", change.out, change.err);
    let r1 = release_of(&change.out);
    assert_ne!(r1, r0);
    let cm = get("ConfigMap", "v1", &format!("flask-example-env-{r1}")).unwrap();
    assert_eq!(cm["data"]["FLASK_GREETING"], "hello");
    let sts = get("StatefulSet", "apps/v1", "flask-example").unwrap();
    assert_eq!(sts["metadata"]["labels"]["twelve.dev/release"], r1.as_str());
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        format!("flask-example-env-{r1}")
    );
    let secret = get("Secret", "v1", &format!("flask-example-env-{r1}")).unwrap();
    assert_eq!(
        secret["data"]["FLASK_SECRET_KEY"],
        secret_key.as_str(),
        "key kept"
    );
    let now = all();
    for gone in [
        "Ingress flask-example".to_string(),
        format!("Job flask-example-migrate-{r0}"),
    ] {
        assert!(
            !now.contains_key(&gone),
            "{gone} not pruned: {:?}",
            now.keys()
        );
        assert!(change
            .out
            .contains(&format!("pruned {}", gone.replacen(' ', " apps/", 1))));
    }
    for kept in [
        "ConfigMap flask-example-env",
        "Secret flask-example-env",
        "ConfigMap flask-example-files",
    ] {
        assert!(
            now.contains_key(&format!("{kept}-{r0}")),
            "{kept}-{r0}: {:?}",
            now.keys()
        );
    }

    // 5. A failed migration leaves the running release alone, config included, and names
    // what it held back; applying again replaces the failed Job and goes through.
    let before = all();
    jobs.set(FAIL);
    let s3 = scenario(tmp.path(), "hola");
    let mut args3 = vec!["k8s", "apply", "flask", "--scenario", s3.to_str().unwrap()];
    args3.extend(common);
    let failed = twelve(&args3, &with_kubeconfig_env);
    assert_eq!(failed.code, 1, "{}", failed.out);
    assert!(failed.err.contains("failed: Job has reached the specified backoff limit; not applied, so the running release is left alone: Service flask-example, Service flask-example-endpoints, StatefulSet flask-example, Deployment flask-example-scheduler"), "{}", failed.err);
    let after = all();
    for (k, (rv, _)) in &before {
        assert_eq!(
            after.get(k).map(|(v, _)| v),
            Some(rv),
            "{k} changed by a failed release"
        );
    }
    let sts = get("StatefulSet", "apps/v1", "flask-example").unwrap();
    assert_eq!(sts["metadata"]["labels"]["twelve.dev/release"], r1.as_str());
    jobs.set(SUCCEED);
    let retry = twelve(&args3, &with_kubeconfig_env);
    assert_eq!(retry.code, 0, "{}{}", retry.out, retry.err);
    assert!(
        retry
            .out
            .contains("failed before (Job has reached the specified backoff limit): replacing it"),
        "{}",
        retry.out
    );
    let r2 = release_of(&retry.out);
    let now = all();
    assert!(
        !now.contains_key(&format!("ConfigMap flask-example-env-{r0}")),
        "two releases back: pruned"
    );
    assert!(
        now.contains_key(&format!("ConfigMap flask-example-env-{r1}")),
        "the previous release's: kept"
    );
    assert!(now.contains_key(&format!("Job flask-example-migrate-{r2}")));

    // 6. A field another manager set is a conflict, named, until --force-conflicts.
    let (status, body) = rt
        .block_on(api.request(
            "PATCH",
            &format!(
                "/apis/apps/v1/namespaces/{ns}/statefulsets/flask-example?fieldManager=ops-console"
            ),
            Some("application/merge-patch+json"),
            br#"{"spec":{"replicas":5}}"#.to_vec(),
        ))
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let conflict = twelve(&args3, &with_kubeconfig_env);
    assert_eq!(conflict.code, 1, "{}", conflict.out);
    assert!(
        conflict.err.contains("cannot apply StatefulSet flask-example in namespace apps: another field manager owns fields twelve sets: ")
            && conflict.err.contains("ops-console")
            && conflict.err.contains(".spec.replicas")
            && conflict.err.contains("--force-conflicts"),
        "{}",
        conflict.err
    );
    let forced = twelve(
        &[&args3[..], &["--force-conflicts"]].concat(),
        &with_kubeconfig_env,
    );
    assert_eq!(forced.code, 0, "{}{}", forced.out, forced.err);
    let sts = get("StatefulSet", "apps/v1", "flask-example").unwrap();
    assert_eq!(sts["spec"]["replicas"], 3);
}
