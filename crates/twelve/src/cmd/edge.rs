//! The public edge's verbs: `domain`, `tls`, `maintenance`, `ingress configure`, and
//! `controller install`/`uninstall` (a systemd unit).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{anyhow, Context};
use serde_json::Value;
use twelve_controller::edge::EdgeRequest;
use twelve_controller::{ControllerClient, Home, Request};

use crate::cli::{DomainCommand, MaintenanceCommand, StatusFormat, TlsCommand};
use crate::output::CliResult;

fn call(req: EdgeRequest) -> CliResult<Value> {
    Ok(ControllerClient::new(Home::from_env()).call(&Request::Edge(req))?)
}

fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn when(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    httpdate::fmt_http_date(t)
}

pub fn domain(cmd: DomainCommand) -> CliResult<ExitCode> {
    match cmd {
        DomainCommand::Add { app, host, hsts } => {
            let r = call(EdgeRequest::DomainAdd {
                app: app.clone(),
                host,
                hsts,
            })?;
            println!(
                "{app}: domain {} added; base URL {}",
                r["host"].as_str().unwrap_or_default(),
                r["url"].as_str().unwrap_or("unchanged")
            );
        }
        DomainCommand::Remove { app, host } => {
            let r = call(EdgeRequest::DomainRemove {
                app: app.clone(),
                host,
            })?;
            println!(
                "{app}: domain {} removed",
                r["host"].as_str().unwrap_or_default()
            );
        }
        DomainCommand::List { app, format } => {
            let r = call(EdgeRequest::DomainList { app })?;
            if format == StatusFormat::Json {
                json(&r["domains"]);
                return Ok(ExitCode::SUCCESS);
            }
            let rows = r["domains"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no domains (twelve domain add APP HOST)");
            }
            println!("{:<16} {:<32} {:<6} TLS", "APP", "HOST", "HSTS");
            for d in rows {
                let tls = match (d["tls"].as_str(), d["expires"].as_i64()) {
                    (Some(src), Some(exp)) => format!("{src}, expires {}", when(exp)),
                    _ => "none".to_string(),
                };
                println!(
                    "{:<16} {:<32} {:<6} {tls}",
                    d["app"].as_str().unwrap_or_default(),
                    d["host"].as_str().unwrap_or_default(),
                    if d["hsts"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn tls(cmd: TlsCommand) -> CliResult<ExitCode> {
    match cmd {
        TlsCommand::Cert { host, cert, key } => {
            let read = |p: &Path, what: &str| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the {what} file {}", p.display()))
            };
            let cert_pem = read(&cert, "certificate")?;
            let key_pem = read(&key, "key")?;
            let r = call(EdgeRequest::TlsCert {
                host,
                cert_pem,
                key_pem,
            })?;
            let names: Vec<&str> = r["names"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!(
                "certificate for {} installed (issuer {}, expires {})",
                names.join(", "),
                r["issuer"].as_str().unwrap_or_default(),
                when(r["not_after"].as_i64().unwrap_or_default())
            );
        }
        TlsCommand::Acme {
            email,
            directory,
            ca_file,
            challenge,
        } => {
            let ca_pem = ca_file
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read --ca-file {}", p.display()))
                })
                .transpose()?;
            let r = call(EdgeRequest::TlsAcme {
                email,
                directory,
                ca_pem,
                challenge: (challenge != "auto").then_some(challenge),
            })?;
            let hosts = r["hosts"].as_array().cloned().unwrap_or_default();
            if hosts.is_empty() {
                println!("ACME on; no domain yet (twelve domain add APP HOST)");
            }
            let mut failed = false;
            for h in hosts {
                let host = h["host"].as_str().unwrap_or_default();
                match h["error"].as_str() {
                    None => println!("{host}: certificate obtained"),
                    Some(e) => {
                        failed = true;
                        println!("{host}: not yet: {e} (retried with backoff; twelve tls status)")
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        TlsCommand::Status { format } => {
            let r = call(EdgeRequest::TlsStatus)?;
            if format == StatusFormat::Json {
                json(&r);
                return Ok(ExitCode::SUCCESS);
            }
            match r["https"].as_str() {
                Some(a) => println!("HTTPS listener: {a}"),
                None => println!("HTTPS listener: none (twelve ingress configure --https ADDR)"),
            }
            if let Some(d) = r["acme"]["directory"].as_str() {
                println!(
                    "ACME: {d} ({})",
                    r["acme"]["email"].as_str().unwrap_or_default()
                );
            }
            println!(
                "{:<32} {:<8} {:<24} {:<31} LAST ATTEMPT",
                "HOST", "SOURCE", "ISSUER", "EXPIRES"
            );
            for h in r["hosts"].as_array().cloned().unwrap_or_default() {
                let expires = match h["not_after"].as_i64() {
                    Some(t) if h["valid"].as_bool() == Some(true) => when(t),
                    Some(t) => format!("EXPIRED {}", when(t)),
                    None => "-".into(),
                };
                let attempt = match (h["last_attempt"].as_i64(), h["last_error"].as_str()) {
                    (Some(t), Some(e)) => format!("{}: FAILED: {e}", when(t)),
                    (Some(t), None) => format!("{}: ok", when(t)),
                    _ => "-".into(),
                };
                println!(
                    "{:<32} {:<8} {:<24} {expires:<31} {attempt}",
                    h["host"].as_str().unwrap_or_default(),
                    h["source"].as_str().unwrap_or("none"),
                    h["issuer"].as_str().unwrap_or("-"),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `twelve status`: certificates that cannot be obtained or renewed.
pub fn status_lines(r: &Value, out: &mut String) {
    let lines: Vec<&str> = r["edge"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if lines.is_empty() {
        return;
    }
    out.push('\n');
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
}

pub fn maintenance(cmd: MaintenanceCommand) -> CliResult<ExitCode> {
    let (app, on, message) = match cmd {
        MaintenanceCommand::On { app, message } => (app, true, message),
        MaintenanceCommand::Off { app } => (app, false, None),
    };
    call(EdgeRequest::Maintenance {
        app: app.clone(),
        on,
        message,
    })?;
    if on {
        println!("{app}: maintenance on (503 with Retry-After; units keep running)");
    } else {
        println!("{app}: maintenance off");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ingress_configure(
    http: Option<String>,
    https: Option<String>,
    no_https: bool,
) -> CliResult<ExitCode> {
    let r = call(EdgeRequest::IngressConfigure {
        http,
        https,
        no_https,
    })?;
    println!(
        "ingress: http://{}{}",
        r["http"].as_str().unwrap_or_default(),
        r["https"]
            .as_str()
            .map(|a| format!(", https://{a}"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

pub const UNIT_FILE: &str = "/etc/systemd/system/twelve-controller.service";

/// The systemd unit that runs the controller of `home` with this binary. `KillMode=process`:
/// stopping the service stops the controller only; units and the ingress keep running, as
/// with `twelve controller stop`.
pub fn unit_text(exe: &Path, home: &Path) -> String {
    format!(
        "[Unit]\n\
         Description=twelve controller (apps, units, ingress)\n\
         Documentation=file://{readme}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         Environment=TWELVE_HOME={home}\n\
         ExecStart={exe} controller run\n\
         ExecStop={exe} controller stop\n\
         KillMode=process\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        readme = "/usr/share/doc/twelve/README.md",
        home = home.display(),
        exe = exe.display(),
    )
}

pub fn controller_install(
    home: &Home,
    unit_file: Option<PathBuf>,
    no_enable: bool,
) -> CliResult<ExitCode> {
    let path = unit_file.unwrap_or_else(|| PathBuf::from(UNIT_FILE));
    let exe = std::env::current_exe().context("cannot tell where this binary is")?;
    let text = unit_text(&exe, &home.root);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    if no_enable {
        return Ok(ExitCode::SUCCESS);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--now", &name])?;
    println!("enabled and started {name}: the controller starts at boot and brings every app back");
    Ok(ExitCode::SUCCESS)
}

pub fn controller_uninstall(unit_file: Option<PathBuf>) -> CliResult<ExitCode> {
    let path = unit_file.unwrap_or_else(|| PathBuf::from(UNIT_FILE));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if systemd_runs() {
        // Stopping the service stops the controller only (KillMode=process).
        let _ = Command::new("systemctl")
            .args(["disable", "--now", &name])
            .status();
    }
    match std::fs::remove_file(&path) {
        Ok(()) => println!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{} was not installed", path.display())
        }
        Err(e) => return Err(anyhow!("cannot remove {}: {e}", path.display()).into()),
    }
    if systemd_runs() {
        let _ = Command::new("systemctl").arg("daemon-reload").status();
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether systemd is the init system (as `sd_booted()`).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> CliResult<()> {
    if !systemd_runs() {
        return Err(anyhow!(
            "systemd is not running on this machine (no /run/systemd/system), so the unit cannot be enabled; it is written: start the controller with `twelve controller run` from your init system, or use --no-enable"
        )
        .into());
    }
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .context("cannot run systemctl")?;
    if !status.success() {
        return Err(anyhow!("systemctl {} failed ({status})", args.join(" ")).into());
    }
    Ok(())
}
