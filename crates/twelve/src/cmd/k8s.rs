//! `twelve k8s render|apply`: the app as Kubernetes objects (twelve-k8s), printed, or
//! applied to a cluster with server-side apply.

use std::path::PathBuf;
use std::process::ExitCode;

use twelve_charm::scenario::{parse_scenario, PLACEHOLDER_SECRET_KEY};
use twelve_charm::{AppState, ServicesAction};
use twelve_k8s::render::secret_key_env;
use twelve_k8s::{ApplyOptions, Client, RenderOptions, Target};
use twelve_project::{Diagnostic, LoadOptions, Project};

use crate::cli::{K8sAppArgs, K8sCommand};
use crate::output::{print_notes, CliResult};

pub fn run(cmd: K8sCommand) -> CliResult<ExitCode> {
    match cmd {
        K8sCommand::Render { app, reveal } => {
            let (project, state) = load(&app)?;
            let rendered =
                twelve_k8s::render(&project, &state, &render_options(&app, None, &state))
                    .map_err(anyhow::Error::new)?;
            for n in &rendered.notes {
                eprintln!("note: {n}");
            }
            let yaml = rendered
                .to_yaml(reveal)
                .map_err(|e| anyhow::anyhow!("cannot write YAML: {e}"))?;
            print!("{yaml}");
            Ok(ExitCode::SUCCESS)
        }
        K8sCommand::Apply {
            app,
            server,
            token_file,
            kubeconfig,
            context,
            insecure_skip_tls_verify,
            dry_run,
            migration_timeout,
            force_conflicts,
        } => {
            let mut target = Target::default();
            let mut kube_ns = None;
            // kubectl's rule: --kubeconfig, else $KUBECONFIG, else ~/.kube/config (not
            // when --server alone says where to go).
            let files = match &kubeconfig {
                Some(path) => vec![path.clone()],
                None if server.is_none() => twelve_k8s::kubeconfig::default_files(
                    std::env::var("KUBECONFIG").ok().as_deref(),
                    std::env::var_os("HOME").map(PathBuf::from).as_deref(),
                ),
                None => vec![],
            };
            if files.is_empty() && context.is_some() {
                return Err(
                    Diagnostic::error("--context needs a kubeconfig, and there is none")
                        .with_help(
                            "pass --kubeconfig FILE, or set $KUBECONFIG, or write ~/.kube/config",
                        )
                        .into(),
                );
            }
            if !files.is_empty() {
                let k = twelve_k8s::kubeconfig::read_merged(&files, context.as_deref())
                    .map_err(anyhow::Error::msg)?;
                target = k.target;
                kube_ns = k.namespace;
            }
            if let Some(s) = server {
                target.server = s;
            }
            if target.server.is_empty() {
                return Err(Diagnostic::error("no Kubernetes API server to apply to")
                    .with_help(
                        "pass --server URL (https://HOST:6443, or http://127.0.0.1:8001 with `kubectl proxy`) or --kubeconfig FILE, or set $KUBECONFIG, or write ~/.kube/config",
                    )
                    .into());
            }
            if let Some(f) = &token_file {
                let t = std::fs::read_to_string(f).map_err(|e| {
                    Diagnostic::error(format!("cannot read token file {}: {e}", f.display()))
                })?;
                target.token = Some(t.trim().to_string());
            }
            target.insecure |= insecure_skip_tls_verify;
            let timeout = twelve_layer::parse_go_duration(&migration_timeout).map_err(|e| {
                Diagnostic::error(format!(
                    "invalid --migration-timeout {migration_timeout:?}: {e}"
                ))
            })?;
            let opts = ApplyOptions {
                dry_run,
                migration_timeout: timeout,
                force_conflicts,
                ..Default::default()
            };
            let (project, mut state) = load(&app)?;
            let ropts = render_options(&app, kube_ns, &state);
            // Refuse early, before any network, an app that would not start.
            let first = twelve_k8s::render(&project, &state, &ropts).map_err(anyhow::Error::new)?;
            if first.status.services != ServicesAction::Run {
                return Err(Diagnostic::error(format!(
                    "{} would not start: {} ({}); nothing was applied",
                    first.app,
                    first.status.message,
                    first.status.state.as_str()
                ))
                .with_help("`twelve k8s render` and `twelve render` show the plan; set the config or integration data it asks for in the scenario")
                .into());
            }
            let ns = first.namespace.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)?;
            rt.block_on(async {
                let client = Client::new(target).map_err(anyhow::Error::new)?;
                if state.secret_key.as_deref() == Some(PLACEHOLDER_SECRET_KEY) {
                    let var = secret_key_env(&project);
                    let (key, kept) =
                        twelve_k8s::cluster_secret_key(&client, &ns, &first.app, &var)
                            .await
                            .map_err(anyhow::Error::new)?;
                    eprintln!(
                        "note: {var}: {}",
                        if kept {
                            "kept from the app's Secret in the cluster"
                        } else {
                            "a new random key (kept in the app's Secret from now on)"
                        }
                    );
                    state.secret_key = Some(key);
                }
                let rendered =
                    twelve_k8s::render(&project, &state, &ropts).map_err(anyhow::Error::new)?;
                for n in &rendered.notes {
                    eprintln!("note: {n}");
                }
                twelve_k8s::apply_all(&client, &rendered.objects, &opts, &mut |line| {
                    println!("{line}")
                })
                .await
                .map_err(anyhow::Error::new)?;
                if dry_run {
                    println!("dry run: nothing was stored");
                } else {
                    println!(
                        "{} release {} applied to namespace {ns} on {}",
                        rendered.app,
                        rendered.release,
                        client.server()
                    );
                }
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

fn render_options(app: &K8sAppArgs, kube_ns: Option<String>, state: &AppState) -> RenderOptions {
    RenderOptions {
        generated_secret_key: state.secret_key.as_deref() == Some(PLACEHOLDER_SECRET_KEY),
        namespace: app.namespace.clone().or(kube_ns),
        image: app.image.clone(),
        units: app.units,
        domain: app.domain.clone(),
        ingress_class: app.ingress_class.clone(),
    }
}

/// The project and state of an app deployed on this machine.
fn load_deployed(name: &str) -> CliResult<(Project, AppState)> {
    use twelve_controller::{ControllerClient, Home, Request};
    let r = ControllerClient::new(Home::from_env()).call(&Request::ExportState {
        app: name.to_string(),
    })?;
    let dir = r["project_dir"].as_str().unwrap_or_default();
    let project = Project::load_with(
        std::path::Path::new(dir),
        &LoadOptions {
            charm_dir: r["charm_dir"].as_str().map(PathBuf::from),
        },
    )?;
    print_notes(&project.notes);
    let state: AppState = serde_json::from_value(r["state"].clone())
        .map_err(|e| anyhow::anyhow!("the controller's state of {name}: {e}"))?;
    for endpoint in r["local_integrations"].as_array().into_iter().flatten() {
        eprintln!(
            "note: {name}:{} points at a server on this machine (127.0.0.1), which the cluster cannot reach; give its data in a scenario (--scenario) or integrate in the cluster",
            endpoint.as_str().unwrap_or_default()
        );
    }
    Ok((project, state))
}

fn load(app: &K8sAppArgs) -> CliResult<(Project, AppState)> {
    if let Some(name) = &app.from_app {
        return load_deployed(name);
    }
    let project = Project::load_with(
        &app.dir,
        &LoadOptions {
            charm_dir: app.charm_dir.clone(),
        },
    )?;
    print_notes(&project.notes);
    let (file, src) = match &app.scenario {
        Some(p) => {
            let src = std::fs::read_to_string(p).map_err(|e| {
                Diagnostic::error(format!("cannot read scenario {}: {e}", p.display()))
            })?;
            (p.clone(), src)
        }
        None => (PathBuf::from("<no scenario>"), String::new()),
    };
    let state = parse_scenario(&project, &file, &src)?;
    Ok((project, state))
}
