//! The verbs that talk to the controller: deploy, status, config, scale, logs, exec, ...

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use indexmap::IndexMap;
use serde_json::Value;
use twelve_controller::{ApiError, AppStatus, ControllerClient, Home, Request};
use twelve_project::{Diagnostic, LoadOptions, Project};

use crate::cli::{AppCommand, ControllerCommand, StatusFormat};
use crate::output::{print_notes, CliError, CliResult};

impl From<ApiError> for CliError {
    fn from(e: ApiError) -> Self {
        let mut d = Diagnostic::error(e.message);
        if let Some(h) = e.hint {
            d = d.with_help(h);
        }
        CliError::Diagnostic(d)
    }
}

fn client() -> ControllerClient {
    ControllerClient::new(Home::from_env())
}

pub fn run(cmd: AppCommand) -> CliResult<ExitCode> {
    match cmd {
        AppCommand::Pack {
            dir,
            charm_dir,
            oci: true,
            output,
            tag,
            push,
        } => {
            let project = load(&dir, charm_dir)?;
            crate::cmd::oci::pack(&project, output, tag, push)
        }
        AppCommand::Pack { dir, charm_dir, .. } => {
            let project = load(&dir, charm_dir)?;
            let release = pack(&project)?;
            println!(
                "{} release {} ({})",
                project.name,
                release.id,
                if release.reused {
                    "unchanged, reused"
                } else {
                    "built"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::Deploy {
            dir,
            app,
            num_units,
            config,
            release,
            no_wait,
            timeout,
            charm_dir,
            external,
            management,
            constraints,
            key_prefix,
        } => {
            let kind = dir.to_string_lossy().to_string();
            if !dir.exists() && twelve_providers::Kind::parse(&kind).is_some() {
                let r = client().call(&Request::DeployService {
                    kind,
                    name: app,
                    external,
                    management,
                    key_prefix,
                })?;
                println!(
                    "{} deployed: {}",
                    r["name"].as_str().unwrap_or_default(),
                    r["server"].as_str().unwrap_or_default()
                );
                return Ok(ExitCode::SUCCESS);
            }
            if external.is_some() || management.is_some() || key_prefix {
                return Err(Diagnostic::error("--external, --management and --key-prefix are for backing services")
                    .with_help("twelve deploy postgresql --external postgresql://postgres@127.0.0.1:5432/postgres")
                    .into());
            }
            let timeout = timeout.as_deref().map(parse_timeout).transpose()?;
            deploy(
                &dir,
                app,
                num_units,
                config,
                release,
                no_wait,
                timeout,
                charm_dir,
                constraints,
            )
        }
        AppCommand::SetConstraints { app, constraints } => {
            let r = client().call(&Request::SetConstraints {
                app: app.clone(),
                constraints: constraints.join(" "),
            })?;
            let now = r["constraints"].as_str().unwrap_or_default();
            if now.is_empty() {
                println!("{app}: no constraints");
            } else {
                println!("{app}: constraints {now} (applied to every running unit)");
            }
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::Integrate {
            app,
            target,
            data,
            data_file,
            no_wait,
        } => {
            let mut data = parse_settings(&data)?;
            if let Some(f) = data_file {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| Diagnostic::error(format!("cannot read {}: {e}", f.display())))?;
                let map: IndexMap<String, Value> =
                    twelve_project::diagnostic::parse_yaml(&f, &text)?;
                for (k, v) in map {
                    let v = match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    data.insert(k, v);
                }
            }
            let r = client().call(&Request::Integrate {
                app: app.clone(),
                target,
                data,
            })?;
            println!(
                "{app}:{} integrated with {}",
                r["endpoint"].as_str().unwrap_or_default(),
                r["provider"].as_str().unwrap_or_default()
            );
            if let Some(w) = r["warning"].as_str() {
                eprintln!("warning: {w}");
            }
            wait_change(&app, &r, no_wait)
        }
        AppCommand::RemoveRelation {
            app,
            target,
            destroy_data,
            no_wait,
        } => {
            let r = client().call(&Request::RemoveRelation {
                app: app.clone(),
                target,
                destroy_data,
            })?;
            let note = if destroy_data {
                " (data destroyed)"
            } else {
                " (data kept)"
            };
            println!(
                "{app}:{} removed{note}",
                r["endpoint"].as_str().unwrap_or_default()
            );
            wait_change(&app, &r, no_wait)
        }
        AppCommand::Status { app, format, watch } => status(app, format, watch),
        AppCommand::Config {
            app,
            settings,
            reset,
            format,
            no_wait,
        } => config(&app, settings, reset, format, no_wait),
        AppCommand::ScaleApplication {
            app,
            units,
            no_wait,
        } => {
            let r = client().call(&Request::Scale {
                app: app.clone(),
                units,
            })?;
            println!(
                "{app} scaled to {units} unit(s): {}",
                unit_list(&app, &r["units"])
            );
            wait_change(&app, &r, no_wait)
        }
        AppCommand::RemoveUnit { unit, no_wait } => {
            let (app, n) = parse_unit(&unit)?;
            let r = client().call(&Request::RemoveUnit {
                app: app.clone(),
                unit: n,
            })?;
            println!(
                "removing {unit}; {app} now has {}",
                unit_list(&app, &r["units"])
            );
            wait_change(&app, &r, no_wait)
        }
        AppCommand::Logs {
            unit,
            forward: Some(forward),
            ..
        } => forward_logs(&unit, &forward),
        AppCommand::Logs {
            unit,
            services,
            follow,
            n,
            all_units,
            since,
            grep,
            forward: None,
        } => logs(&unit, services, follow, n, all_units, since, grep),
        AppCommand::Exec { unit, command } => {
            let (app, n) = parse_unit(&unit)?;
            let r = client().call(&Request::Exec {
                app,
                unit: n,
                command,
                env: IndexMap::new(),
                timeout: None,
            })?;
            print!("{}", r["stdout"].as_str().unwrap_or(""));
            eprint!("{}", r["stderr"].as_str().unwrap_or(""));
            let code = r["exit-code"].as_i64().unwrap_or(1);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        AppCommand::RemoveApplication { app, destroy_data } => {
            client().call(&Request::Remove {
                app: app.clone(),
                destroy_data,
            })?;
            println!("removed {app}");
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::Releases { app } => {
            let r = client().call(&Request::Releases { app })?;
            println!("{:<8} {:<16} {:<26} ", "Release", "Id", "Created");
            for rel in r.as_array().into_iter().flatten() {
                let mark = if rel["current"].as_bool() == Some(true) {
                    "  (current)"
                } else {
                    ""
                };
                println!(
                    "{:<8} {:<16} {:<26}{mark}",
                    rel["number"],
                    rel["id"].as_str().unwrap_or(""),
                    rel["created"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::Controller { command } => controller(command),
        AppCommand::Domain { command } => crate::cmd::edge::domain(command),
        AppCommand::Tls { command } => crate::cmd::edge::tls(command),
        AppCommand::Maintenance { command } => crate::cmd::edge::maintenance(command),
        AppCommand::Metrics { command } => {
            use crate::cli::MetricsCommand;
            let path = match &command {
                MetricsCommand::Sd => "/sd",
                MetricsCommand::PrometheusConfig { .. } => "/prometheus-config",
                MetricsCommand::Show => "/metrics",
                MetricsCommand::LokiRules { dir, tenant } => {
                    crate::cmd::cos::loki_rules(dir, tenant)?;
                    return Ok(ExitCode::SUCCESS);
                }
                MetricsCommand::Dashboards { dir } => {
                    crate::cmd::cos::dashboards(dir)?;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            let (_addr, body) = web_get(path)?;
            if let MetricsCommand::PrometheusConfig { rules_dir } = command {
                let dir = rules_dir
                    .unwrap_or_else(|| Home::from_env().root.join("cos").join("prometheus-rules"));
                let rule_files = crate::cmd::cos::prometheus_rules(&dir)?;
                print!("{rule_files}");
            }
            print!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::Dashboard { token } => {
            let (addr, _) = web_get("/api/state")?;
            if !token {
                println!("http://{addr}/");
                return Ok(ExitCode::SUCCESS);
            }
            let home = Home::from_env();
            let token = home.read_web_token().ok().flatten().ok_or_else(|| {
                Diagnostic::error(format!(
                    "the controller keeps no dashboard token in {}",
                    home.web_token_file().display()
                ))
                .with_help("see controller.log, then restart it: twelve controller stop")
            })?;
            println!("http://{addr}/?token={token}");
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::AddSecret {
            name,
            content,
            files,
            info,
        } => {
            let content = secret_content(&content, &files)?;
            let r = client().call(&Request::AddSecret {
                name,
                content,
                description: info,
            })?;
            println!("{}", r["uri"].as_str().unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::UpdateSecret {
            secret,
            content,
            files,
            info,
            no_wait,
        } => {
            let content = secret_content(&content, &files)?;
            let r = client().call(&Request::UpdateSecret {
                secret,
                content,
                description: info,
            })?;
            println!(
                "{} revision {}",
                r["name"].as_str().unwrap_or_default(),
                r["revision"]
            );
            // Every app the secret is granted to rolls the new revision out.
            let mut code = ExitCode::SUCCESS;
            for a in r["apps"].as_array().into_iter().flatten() {
                let app = a["app"].as_str().unwrap_or_default();
                code = wait_change(app, a, no_wait)?;
            }
            Ok(code)
        }
        AppCommand::Secrets { format } => {
            let r = client().call(&Request::Secrets)?;
            match format {
                StatusFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default())
                }
                StatusFormat::Text => {
                    println!("{:<28} {:<20} {:<8} Granted to", "ID", "Name", "Revision");
                    for s in r.as_array().into_iter().flatten() {
                        let grants: Vec<&str> = s["grants"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        println!(
                            "{:<28} {:<20} {:<8} {}",
                            s["uri"].as_str().unwrap_or(""),
                            s["name"].as_str().unwrap_or(""),
                            s["revision"],
                            grants.join(", ")
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::ShowSecret {
            secret,
            reveal,
            revision,
            format,
        } => {
            let r = client().call(&Request::ShowSecret {
                secret,
                reveal,
                revision,
            })?;
            match format {
                StatusFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default())
                }
                StatusFormat::Text => print!("{}", serde_saphyr::to_string(&r).unwrap_or_default()),
            }
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::GrantSecret { secret, app } => {
            client().call(&Request::GrantSecret {
                secret: secret.clone(),
                app: app.clone(),
            })?;
            println!("granted {secret} to {app}");
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::RevokeSecret { secret, app } => {
            client().call(&Request::RevokeSecret {
                secret: secret.clone(),
                app: app.clone(),
            })?;
            println!("revoked {secret} from {app}");
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::RemoveSecret { secret } => {
            client().call(&Request::RemoveSecret {
                secret: secret.clone(),
            })?;
            println!("removed {secret}");
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::Actions { app } => {
            let r = client().call(&Request::Actions { app })?;
            println!("{:<24} {:<30} Description", "Action", "Parameters");
            for (name, a) in r.as_object().into_iter().flatten() {
                let required: Vec<&str> = a["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let params: Vec<String> = a["params"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(p, spec)| {
                        let ty = spec["type"].as_str().unwrap_or("string");
                        if required.contains(&p.as_str()) {
                            format!("{p}:{ty}*")
                        } else {
                            format!("{p}:{ty}")
                        }
                    })
                    .collect();
                println!(
                    "{:<24} {:<30} {}",
                    name,
                    params.join(" "),
                    a["description"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AppCommand::Run {
            unit,
            action,
            params,
            format,
            no_wait,
        } => {
            // `app/leader`, or a backing service's name alone (`twelve run postgresql
            // create-backup`), mean the leader.
            let (app, n) = match unit.split_once('/') {
                Some((app, "leader")) if !app.is_empty() => {
                    (app.to_string(), twelve_controller::actions::LEADER_UNIT)
                }
                None if !unit.is_empty() => (unit.clone(), twelve_controller::actions::LEADER_UNIT),
                _ => parse_unit(&unit)?,
            };
            let params = parse_settings(&params)?;
            let mut r = client().call(&Request::RunAction {
                app: app.clone(),
                unit: n,
                action,
                params,
            })?;
            // A built-in action that changes the app (rotate-secret-key) says which
            // generation of its state to wait for.
            let change = r.as_object_mut().and_then(|o| o.remove("generation"));
            match format {
                crate::cli::Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default())
                }
                crate::cli::Format::Yaml => {
                    print!("{}", serde_saphyr::to_string(&r).unwrap_or_default())
                }
            }
            match change {
                Some(g) => wait_change(&app, &serde_json::json!({ "generation": g }), no_wait),
                None => Ok(ExitCode::SUCCESS),
            }
        }
    }
}

/// `--timeout`: a duration like 90s or 5m, or seconds.
fn parse_timeout(text: &str) -> CliResult<u64> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    twelve_layer::parse_go_duration(text)
        .map(|d| d.as_secs().max(1))
        .map_err(|e| {
            Diagnostic::error(format!("--timeout: {e}"))
                .with_help("give a duration like 90s or 5m")
                .into()
        })
}

/// Waits until the change the controller answered with (its `generation`) is live on
/// every unit, or failed and was rolled back; `--no-wait` returns at once.
fn wait_change(app: &str, answer: &Value, no_wait: bool) -> CliResult<ExitCode> {
    let Some(generation) = answer["generation"].as_u64() else {
        return Ok(ExitCode::SUCCESS);
    };
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_settled(&client(), app, generation, rollout_limit(None))
}

/// How long the CLI waits: the controller's deadline for the change, and a margin for it
/// to roll back.
fn rollout_limit(timeout: Option<u64>) -> Duration {
    let deadline = timeout.unwrap_or_else(|| {
        std::env::var("TWELVE_READY_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120)
    });
    Duration::from_secs(deadline + 60)
}

fn load(dir: &Path, charm_dir: Option<PathBuf>) -> CliResult<Project> {
    let dir =
        std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let charm_dir = charm_dir
        .map(std::path::absolute)
        .transpose()
        .context("cannot resolve --charm-dir")?;
    let project = Project::load_with(&dir, &LoadOptions { charm_dir })?;
    print_notes(&project.notes);
    Ok(project)
}

fn pack(project: &Project) -> CliResult<twelve_pack::Release> {
    let home = Home::from_env();
    home.ensure()
        .with_context(|| format!("cannot create {}", home.root.display()))?;
    twelve_controller::home::make_traversable(&home.root);
    let started = Instant::now();
    let name = project.name.clone();
    let opts =
        twelve_pack::PackOptions::new(home.releases(), home.cache()).with_progress(move |step| {
            eprintln!("  pack {name}: {step}");
        });
    let release = twelve_pack::pack(project, &opts)
        .map_err(|e| anyhow!("cannot pack {}: {e}", project.name))?;
    if !release.reused {
        eprintln!(
            "Packed {} release {} in {:.1}s.",
            project.name,
            release.id,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(release)
}

/// `key=value` pairs and `key=path` files, as a secret's content.
fn secret_content(pairs: &[String], files: &[String]) -> CliResult<IndexMap<String, String>> {
    let mut content = parse_settings(pairs)?;
    for (k, path) in parse_settings(files)? {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Diagnostic::error(format!("cannot read {path} for key {k}: {e}")))?;
        content.insert(k, text);
    }
    Ok(content)
}

fn parse_settings(settings: &[String]) -> CliResult<IndexMap<String, String>> {
    let mut out = IndexMap::new();
    for s in settings {
        let Some((k, v)) = s.split_once('=') else {
            return Err(Diagnostic::error(format!("{s:?} is not key=value"))
                .with_help("write settings like token=abc")
                .into());
        };
        if k.is_empty() {
            return Err(Diagnostic::error(format!("{s:?} has no key"))
                .with_help("write settings like token=abc")
                .into());
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub fn parse_unit(unit: &str) -> CliResult<(String, u32)> {
    match unit.rsplit_once('/') {
        Some((app, n)) if !app.is_empty() => match n.parse::<u32>() {
            Ok(n) => Ok((app.to_string(), n)),
            Err(_) => Err(Diagnostic::error(format!("{unit:?} is not a unit name"))
                .with_help("units are named app/N, like web/0")
                .into()),
        },
        _ => Err(Diagnostic::error(format!("{unit:?} is not a unit name"))
            .with_help("units are named app/N, like web/0")
            .into()),
    }
}

fn unit_list(app: &str, units: &Value) -> String {
    units
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| format!("{app}/{u}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_arguments)]
fn deploy(
    dir: &Path,
    app: Option<String>,
    num_units: Option<u32>,
    config: Vec<String>,
    release: Option<u32>,
    no_wait: bool,
    timeout: Option<u64>,
    charm_dir: Option<PathBuf>,
    constraints: Option<String>,
) -> CliResult<ExitCode> {
    let settings = parse_settings(&config)?;
    let c = client();
    let name = if let Some(n) = release {
        let app = match app {
            Some(a) => a,
            None => load(dir, charm_dir.clone())?.name,
        };
        let r = c.call(&Request::Rollback {
            app: app.clone(),
            release: n,
        })?;
        println!("{app}: rolling back to release {n}");
        (app, r["generation"].as_u64().unwrap_or(0))
    } else {
        let project = load(dir, charm_dir.clone())?;
        let name = app.unwrap_or_else(|| project.name.clone());
        if !twelve_project::project::valid_app_name(&name) {
            return Err(Diagnostic::error(format!("invalid app name {name:?}"))
                .with_help("use lower-case letters, digits and dashes, starting with a letter")
                .into());
        }
        let release = pack(&project)?;
        let project_dir =
            std::path::absolute(dir).context("cannot resolve the project directory")?;
        let charm_dir = charm_dir
            .map(|d| std::path::absolute(d).map(|p| p.display().to_string()))
            .transpose()
            .context("cannot resolve --charm-dir")?;
        let r = c.call(&Request::Deploy {
            app: name.clone(),
            project_dir: project_dir.display().to_string(),
            charm_dir,
            release_id: release.id.clone(),
            num_units,
            config: settings,
            timeout,
            constraints,
        })?;
        let verb = if r["new"].as_bool() == Some(true) {
            "deployed"
        } else {
            "updated"
        };
        println!(
            "{name}: {verb}, release {} ({}), units {}",
            r["release"],
            release.id,
            unit_list(&name, &r["units"])
        );
        (name, r["generation"].as_u64().unwrap_or(0))
    };
    let (name, generation) = name;
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_settled(&c, &name, generation, rollout_limit(timeout))
}

/// Waits until the app's status reflects `generation` and is no longer in maintenance,
/// printing a line per unit as it progresses; then says where it is, or why not: a change
/// that was rolled back (or is not ready in time) is an error, with the last 20 lines of
/// the failing service.
fn wait_settled(
    c: &ControllerClient,
    name: &str,
    generation: u64,
    limit: Duration,
) -> CliResult<ExitCode> {
    let start = Instant::now();
    let mut last = String::new();
    // Each unit's line once per state it passes through (a crash loop alternates).
    let mut shown: std::collections::HashSet<(String, String)> = Default::default();
    loop {
        let r = c.call(&Request::Status {
            app: Some(name.to_string()),
        })?;
        let st: AppStatus = serde_json::from_value(r["apps"][0].clone())
            .map_err(|e| anyhow!("bad status from the controller: {e}"))?;
        for u in &st.units {
            let line = match u.message.as_str() {
                "" => u.status.clone(),
                m => format!("{}: {m}", u.status),
            };
            if shown.insert((u.name.clone(), line.clone())) {
                eprintln!("  {}: {line}", u.name);
            }
        }
        if st.generation >= generation {
            if let Some(rb) = st.rollback.as_ref().filter(|r| r.generation >= generation) {
                print_log_tail(&rb.unit, &rb.service, &rb.log_tail);
                return Err(Diagnostic::error(format!(
                    "{name}: the change did not go live: {}; rolled back to release {}",
                    rb.reason, rb.release
                ))
                .with_help("the previous release and config served throughout and still do")
                .into());
            }
            let line = format!(
                "{}: {}{}",
                name,
                st.status,
                if st.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", st.message)
                }
            );
            match st.status.as_str() {
                "active" => {
                    println!("{name} is active at {}", st.url.unwrap_or_default());
                    return Ok(ExitCode::SUCCESS);
                }
                "blocked" | "waiting" => {
                    println!("{line}");
                    return Ok(ExitCode::SUCCESS);
                }
                "error" => {
                    return Err(Diagnostic::error(line)
                        .with_help(format!(
                            "see `twelve logs {name}/0` and `twelve status {name}`"
                        ))
                        .into());
                }
                _ => {}
            }
            if line != last {
                eprintln!("  {line}");
                last = line;
            }
        }
        if start.elapsed() > limit {
            let failing = st.units.iter().find(|u| u.status != "active");
            if let Some(u) = failing {
                let (service, lines) = unit_log_tail(&u.supervisor);
                print_log_tail(&u.name, &service, &lines);
            }
            return Err(anyhow!(
                "{name} did not become ready within {}s ({}); see `twelve status {name}`",
                limit.as_secs(),
                failing
                    .map(|u| format!("{}: {}", u.name, u.message))
                    .unwrap_or_else(|| "the controller did not act on the change".into())
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_log_tail(unit: &str, service: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    eprintln!("last {} lines of {unit} {service}:", lines.len());
    for l in lines {
        eprintln!("  | {l}");
    }
}

/// The last 20 log lines of a unit's first service that is not running (else its first).
fn unit_log_tail(supervisor: &str) -> (String, Vec<String>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return (String::new(), vec![]);
    };
    rt.block_on(async {
        let pebble = twelve_pebble::client::Client::for_dir(supervisor);
        let services = pebble.services(&[]).await.unwrap_or_default();
        let Some(name) = services
            .iter()
            .find(|s| s.startup == "enabled" && s.current != "active")
            .or(services.first())
            .map(|s| s.name.clone())
        else {
            return (String::new(), vec![]);
        };
        let lines = pebble
            .logs(&[name.as_str()], Some(20))
            .await
            .map(|e| e.iter().map(|e| e.message.clone()).collect())
            .unwrap_or_default();
        (name, lines)
    })
}

fn status(app: Option<String>, format: StatusFormat, watch: Option<String>) -> CliResult<ExitCode> {
    let c = client();
    let interval = watch
        .map(|w| {
            twelve_layer::parse_go_duration(&w).map_err(|e| {
                Diagnostic::error(format!("--watch: {e}"))
                    .with_help("give a duration like 2s or 500ms")
            })
        })
        .transpose()?;
    loop {
        let r = c.call(&Request::Status { app: app.clone() })?;
        let text = match format {
            StatusFormat::Json => serde_json::to_string_pretty(&r).unwrap_or_default(),
            StatusFormat::Text => status_text(&r),
        };
        match interval {
            Some(d) => {
                println!("\x1b[2J\x1b[H{text}");
                std::thread::sleep(d.max(Duration::from_millis(100)));
            }
            None => {
                println!("{text}");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

fn status_text(r: &Value) -> String {
    let apps: Vec<AppStatus> = serde_json::from_value(r["apps"].clone()).unwrap_or_default();
    if apps.is_empty()
        && r["backing-services"]
            .as_array()
            .is_none_or(|s| s.is_empty())
    {
        return "No apps. Deploy one with `twelve deploy`.".into();
    }
    let mut out = format!(
        "{:<20} {:<12} {:<8} {:<6} {:<28} {}\n",
        "App", "Status", "Release", "Units", "URL", "Message"
    );
    for a in &apps {
        out.push_str(&format!(
            "{:<20} {:<12} {:<8} {:<6} {:<28} {}\n",
            a.name,
            a.status,
            a.release.map(|r| r.to_string()).unwrap_or_default(),
            a.units.len(),
            a.url.clone().unwrap_or_default(),
            a.message
        ));
    }
    out.push_str(&format!(
        "\n{:<22} {:<12} {:<22} {}\n",
        "Unit", "Status", "Address", "Message"
    ));
    for a in &apps {
        for u in &a.units {
            let mut name = u.name.clone();
            if u.leader {
                name.push('*');
            }
            let mut msg = u.message.clone();
            if u.scheduler {
                msg = if msg.is_empty() {
                    "scheduler".into()
                } else {
                    format!("{msg} (scheduler)")
                };
            }
            out.push_str(&format!(
                "{:<22} {:<12} {:<22} {}\n",
                name, u.status, u.address, msg
            ));
        }
        if let Some(m) = &a.migration {
            out.push_str(&format!(
                "\n{}: migration {:?} {} (attempts: {})\n",
                a.name,
                m.command.join(" "),
                m.state,
                m.attempts
            ));
            for line in m.output_tail.lines() {
                out.push_str(&format!("  | {line}\n"));
            }
        }
    }
    crate::cmd::edge::status_lines(r, &mut out);
    let services = r["backing-services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !services.is_empty() {
        out.push_str(&format!(
            "\n{:<20} {:<12} {:<10} {:<28} {}\n",
            "Service", "Status", "Mode", "Address", "Integrated with"
        ));
        for s in &services {
            let users: Vec<&str> = s["integrated_with"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut status = s["status"].as_str().unwrap_or("").to_string();
            if let Some(m) = s["message"].as_str().filter(|m| !m.is_empty()) {
                status = format!("{status}: {m}");
            }
            out.push_str(&format!(
                "{:<20} {:<12} {:<10} {:<28} {}\n",
                s["name"].as_str().unwrap_or(""),
                status,
                s["mode"].as_str().unwrap_or(""),
                s["address"].as_str().unwrap_or(""),
                users.join(", ")
            ));
        }
    }
    let mut rels = String::new();
    for a in &apps {
        for i in &a.integrations {
            let status = if i.message.is_empty() {
                i.status.clone()
            } else {
                format!("{}: {}", i.status, i.message)
            };
            rels.push_str(&format!(
                "{:<28} {:<20} {:<20} {}\n",
                format!("{}:{}", a.name, i.endpoint),
                i.interface,
                i.provider,
                status
            ));
        }
    }
    if !rels.is_empty() {
        out.push_str(&format!(
            "\n{:<28} {:<20} {:<20} Status\n{rels}",
            "Integration", "Interface", "Provider"
        ));
    }
    out.trim_end().to_string()
}

/// `twelve logs APP --forward loki=URL`: the `logging` integration, given by hand.
fn forward_logs(app: &str, forward: &str) -> CliResult<ExitCode> {
    if app.contains('/') {
        return Err(Diagnostic::error(format!(
            "logs are forwarded per app, not per unit: twelve logs {} --forward {forward}",
            app.split('/').next().unwrap_or(app)
        ))
        .into());
    }
    let Some(url) = forward.strip_prefix("loki=") else {
        return Err(Diagnostic::error(format!(
            "--forward {forward:?}: expected loki=URL, e.g. loki=http://127.0.0.1:3100/loki/api/v1/push"
        ))
        .into());
    };
    let r = client().call(&Request::Integrate {
        app: app.to_string(),
        target: "logging".into(),
        data: IndexMap::from([("url".to_string(), url.to_string())]),
    })?;
    println!(
        "{app}'s logs are forwarded to {url} ({app}:{}; stop with: twelve remove-relation {app} logging)",
        r["endpoint"].as_str().unwrap_or("logging")
    );
    Ok(ExitCode::SUCCESS)
}

fn config(
    app: &str,
    settings: Vec<String>,
    reset: Vec<String>,
    format: StatusFormat,
    no_wait: bool,
) -> CliResult<ExitCode> {
    let c = client();
    if settings.is_empty() && reset.is_empty() {
        let r = c.call(&Request::GetConfig {
            app: app.to_string(),
        })?;
        match format {
            StatusFormat::Json => {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default())
            }
            StatusFormat::Text => {
                println!("{:<36} {:<8} {:<8} Value", "Option", "Type", "Source");
                for (name, o) in r.as_object().into_iter().flatten() {
                    let value = match &o["value"] {
                        Value::Null => String::new(),
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    };
                    println!(
                        "{:<36} {:<8} {:<8} {}",
                        name,
                        o["type"].as_str().unwrap_or(""),
                        o["source"].as_str().unwrap_or(""),
                        value
                    );
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let set = parse_settings(&settings)?;
    let r = c.call(&Request::SetConfig {
        app: app.to_string(),
        set,
        reset,
    })?;
    wait_change(app, &r, no_wait)
}

/// `twelve logs app/N` (one unit, Pebble's format) or `twelve logs app` (every unit,
/// merged in time order, each line naming its unit).
#[allow(clippy::too_many_arguments)]
fn logs(
    target: &str,
    services: Vec<String>,
    follow: bool,
    n: i64,
    all_units: bool,
    since: Option<String>,
    grep: Option<String>,
) -> CliResult<ExitCode> {
    let (app, only) = match target.split_once('/') {
        Some(_) => {
            let (app, num) = parse_unit(target)?;
            (app, if all_units { None } else { Some(num) })
        }
        None => (target.to_string(), None),
    };
    let pattern = grep
        .map(|g| regex::Regex::new(&g).map_err(|e| Diagnostic::error(format!("--grep: {e}"))))
        .transpose()?;
    let cutoff = since
        .map(|s| {
            twelve_layer::parse_go_duration(&s).map_err(|e| {
                Diagnostic::error(format!("--since: {e}"))
                    .with_help("give a duration like 10m, 30s or 1h")
            })
        })
        .transpose()?
        .map(|d| {
            let t = time::OffsetDateTime::now_utc() - d;
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        });
    // Ask the controller where the units' supervisors are (and so that an unknown app or
    // unit is a clear error).
    let r = client().call(&Request::Status {
        app: Some(app.clone()),
    })?;
    let units: Vec<(String, PathBuf)> = r["apps"][0]["units"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| only.is_none() || u["name"].as_str() == Some(target))
        .filter_map(|u| {
            Some((
                u["name"].as_str()?.to_string(),
                PathBuf::from(u["supervisor"].as_str()?),
            ))
        })
        .collect();
    if units.is_empty() {
        return Err(Diagnostic::error(format!("unit {target} not found"))
            .with_help(format!("see `twelve status {app}`"))
            .into());
    }
    let many = units.len() > 1 || only.is_none();
    let keep = move |e: &twelve_pebble::types::LogEntry| {
        cutoff
            .as_ref()
            .is_none_or(|c| e.time.as_str() >= c.as_str())
            && pattern.as_ref().is_none_or(|p| p.is_match(&e.message))
    };
    let line = move |unit: &str, e: &twelve_pebble::types::LogEntry| {
        if many {
            format!("{} {unit} [{}] {}", e.time, e.service, e.message)
        } else {
            e.to_text()
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    rt.block_on(async move {
        let names: Vec<&str> = services.iter().map(String::as_str).collect();
        let mut all = vec![];
        for (unit, dir) in &units {
            let pebble = twelve_pebble::client::Client::for_dir(dir);
            for e in pebble
                .logs(&names, Some(n))
                .await
                .map_err(|e| anyhow!("cannot read the logs of {unit}: {e}"))?
            {
                if keep(&e) {
                    all.push((unit.clone(), e));
                }
            }
        }
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time));
        if n >= 0 && many {
            let extra = all.len().saturating_sub(n as usize);
            all.drain(..extra);
        }
        for (unit, e) in &all {
            println!("{}", line(unit, e));
        }
        if follow {
            let keep = std::sync::Arc::new(keep);
            let line = std::sync::Arc::new(line);
            let mut tasks = vec![];
            for (unit, dir) in units {
                let (keep, line) = (keep.clone(), line.clone());
                let services = services.clone();
                tasks.push(tokio::spawn(async move {
                    let names: Vec<&str> = services.iter().map(String::as_str).collect();
                    let pebble = twelve_pebble::client::Client::for_dir(&dir);
                    let _ = pebble
                        .stream_logs(&names, Some(0), true, |e| {
                            if keep(&e) {
                                println!("{}", line(&unit, &e));
                            }
                        })
                        .await;
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What `twelve controller stop` says, from the controller's answer to the shutdown: what
/// keeps running (apps, the ingress, managed backing servers) and what stopped with it.
fn stopped_message(answer: &serde_json::Value) -> String {
    let (Some(apps), Some(ingress_stops)) =
        (answer["apps"].as_u64(), answer["ingress-stops"].as_bool())
    else {
        // A controller from before these fields.
        return "controller stopped".to_string();
    };
    let services = answer["services"].as_u64().unwrap_or_default();
    let mut running = vec![];
    if apps > 0 {
        running.push("apps");
    }
    if !ingress_stops && apps > 0 {
        running.push("the ingress");
    }
    if services > 0 {
        running.push("managed backing services");
    }
    let mut msg = "controller stopped".to_string();
    if ingress_stops {
        msg.push_str(" with its ingress (no app is deployed)");
    }
    match running.as_slice() {
        [] => {}
        [one] => msg.push_str(&format!("; {one} keep running")),
        [init @ .., last] => {
            msg.push_str(&format!("; {} and {last} keep running", init.join(", ")))
        }
    }
    msg
}

fn controller(cmd: ControllerCommand) -> CliResult<ExitCode> {
    let home = Home::from_env();
    match cmd {
        ControllerCommand::Run => {
            // Before anything is created: the store, logs and keys are the controller's alone.
            twelve_controller::home::restrict_umask();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot start a runtime")?;
            rt.block_on(async {
                let c = twelve_controller::Controller::new(home)?;
                c.run().await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        ControllerCommand::Status => {
            let c = ControllerClient::new(home.clone());
            match c.call_once(&Request::Ping) {
                Ok(r) if r.ok => {
                    println!(
                        "controller running (pid {}), state in {}",
                        r.result["pid"],
                        home.root.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                _ => {
                    println!("controller not running (state in {})", home.root.display());
                    Ok(ExitCode::from(3))
                }
            }
        }
        ControllerCommand::Stop => {
            let c = ControllerClient::new(home.clone());
            let Ok(answer) = c.call_once(&Request::Shutdown) else {
                println!("controller not running");
                return Ok(ExitCode::SUCCESS);
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && c.is_running() {
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("{}", stopped_message(&answer.result));
            Ok(ExitCode::SUCCESS)
        }
        ControllerCommand::Install {
            unit_file,
            no_enable,
        } => crate::cmd::edge::controller_install(&home, unit_file, no_enable),
        ControllerCommand::Uninstall { unit_file } => {
            crate::cmd::edge::controller_uninstall(unit_file)
        }
    }
}

/// GETs a path of the controller's observability server (its address is in
/// `TWELVE_HOME/web.addr`), starting the controller if needed.
fn web_get(path: &str) -> CliResult<(String, String)> {
    use std::io::{Read, Write};
    let c = client();
    c.call(&Request::Ping)?;
    let home = Home::from_env();
    let addr = std::fs::read_to_string(home.root.join("web.addr")).map_err(|_| {
        Diagnostic::error("the controller runs no observability server")
            .with_help("its address may be taken: see controller.log, set TWELVE_WEB_ADDR and restart the controller")
    })?;
    let addr = addr.trim().to_string();
    let mut s =
        std::net::TcpStream::connect(&addr).with_context(|| format!("cannot reach {addr}"))?;
    // The token too: the server answers other Hosts than loopback names (e.g. 0.0.0.0:9180) with it only.
    let auth = match home.read_web_token() {
        Ok(Some(t)) => format!("Authorization: Bearer {t}\r\n"),
        _ => String::new(),
    };
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")
        .context("cannot send the request")?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .context("cannot read the answer")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((addr, body))
}
