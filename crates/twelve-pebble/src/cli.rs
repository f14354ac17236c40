//! `twelve pebble ...`: the daemon and the client commands, mirroring Pebble's CLI.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::client::{Client, Error};
use crate::types::{ExecRequest, LogTargetInfo, ServiceInfo};

/// Arguments of `twelve pebble`.
#[derive(Debug, clap::Args)]
pub struct PebbleArgs {
    #[command(subcommand)]
    pub command: PebbleCommand,
}

/// Where the daemon's socket is: `--dir`, else `$PEBBLE_SOCKET`, else `$PEBBLE`.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// The daemon's state directory (its socket is DIR/.pebble.socket).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl Conn {
    pub fn socket(&self) -> PathBuf {
        if let Some(dir) = &self.dir {
            return crate::client::socket_in(dir);
        }
        if let Some(s) = std::env::var_os("PEBBLE_SOCKET").filter(|s| !s.is_empty()) {
            return PathBuf::from(s);
        }
        crate::client::socket_in(&default_dir())
    }

    fn client(&self) -> Client {
        Client::new(self.socket())
    }
}

fn default_dir() -> PathBuf {
    std::env::var_os("PEBBLE")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/pebble/default"))
}

#[derive(Debug, clap::Subcommand)]
pub enum PebbleCommand {
    /// Run the supervisor daemon (serves DIR/.pebble.socket).
    Run {
        /// The state directory, holding layers/ (default: $PEBBLE).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Don't start the services with `startup: enabled`.
        #[arg(long)]
        hold: bool,
        /// Also copy service output to stdout.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print the combined plan as YAML.
    Plan {
        #[command(flatten)]
        conn: Conn,
    },
    /// List services and their status.
    Services {
        names: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Start services (and what they require).
    Start {
        #[arg(required = true)]
        names: Vec<String>,
        /// Print the change id instead of waiting.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop services (and those that require them).
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Restart services.
    Restart {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Restart services whose config changed; start enabled services not running.
    Replan {
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a layer (in memory) from a YAML file (`-` for stdin).
    Add {
        label: String,
        file: PathBuf,
        /// Merge into the layer with the same label, if any.
        #[arg(long)]
        combine: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print service logs.
    Logs {
        services: Vec<String>,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// How many lines (or `all`).
        #[arg(short = 'n', default_value = "30")]
        n: String,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Run a command and wait for it, with a service's context if asked.
    Exec {
        /// Run as this user.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        uid: Option<u32>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        gid: Option<u32>,
        /// Set an environment variable (K=V); repeatable.
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Working directory.
        #[arg(short = 'w', long = "working-dir")]
        working_dir: Option<String>,
        /// Take environment, user and working dir from this service.
        #[arg(long)]
        context: Option<String>,
        /// Kill the command after this long (Go duration, e.g. 10m).
        #[arg(long)]
        timeout: Option<String>,
        #[command(flatten)]
        conn: Conn,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// List health checks.
    Checks {
        names: Vec<String>,
        /// `alive` or `ready`.
        #[arg(long)]
        level: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one check; with --refresh, run it now first.
    Check {
        name: String,
        #[arg(long)]
        refresh: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Start checks.
    StartChecks {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop checks.
    StopChecks {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Exit 0 if the checks (of the level) are up, 1 if not.
    Health {
        names: Vec<String>,
        #[arg(long)]
        level: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List log targets and how forwarding to them goes.
    LogTargets {
        #[command(flatten)]
        conn: Conn,
    },
    /// Send a signal to the main process of services.
    Signal {
        signal: String,
        #[arg(required = true)]
        services: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

pub fn run(args: PebbleArgs) -> ExitCode {
    if let PebbleCommand::Run { dir, hold, verbose } = args.command {
        let code = crate::daemon::run(crate::daemon::RunOptions {
            dir: dir.unwrap_or_else(default_dir),
            hold,
            verbose,
        });
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln_safe(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(client_command(args.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln_safe(&format!("error: {e}"));
            1
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn eprintln_safe(s: &str) {
    let _ = writeln!(std::io::stderr(), "{s}");
}

fn print(s: &str) {
    let _ = writeln!(std::io::stdout(), "{s}");
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] Error),
    #[error("{0}")]
    Usage(String),
}

async fn client_command(cmd: PebbleCommand) -> Result<i32, CliError> {
    match cmd {
        PebbleCommand::Run { .. } => unreachable!("handled by run"),
        PebbleCommand::Plan { conn } => {
            let plan = conn.client().plan().await?;
            let _ = write!(std::io::stdout(), "{plan}");
        }
        PebbleCommand::Services { names, conn } => {
            let list = conn.client().services(&strs(&names)).await?;
            print_services(&list);
        }
        PebbleCommand::Start {
            names,
            no_wait,
            conn,
        } => return service_action(&conn, "start", &names, no_wait).await,
        PebbleCommand::Stop {
            names,
            no_wait,
            conn,
        } => return service_action(&conn, "stop", &names, no_wait).await,
        PebbleCommand::Restart {
            names,
            no_wait,
            conn,
        } => return service_action(&conn, "restart", &names, no_wait).await,
        PebbleCommand::Replan { no_wait, conn } => {
            return service_action(&conn, "replan", &[], no_wait).await
        }
        PebbleCommand::Add {
            label,
            file,
            combine,
            conn,
        } => {
            let yaml = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?
            };
            conn.client().add_layer(&label, &yaml, combine).await?;
            print(&format!(
                "Layer {label:?} added successfully from {:?}",
                file.display().to_string()
            ));
        }
        PebbleCommand::Logs {
            services,
            follow,
            n,
            format,
            conn,
        } => {
            let n: i64 = match n.as_str() {
                "all" => -1,
                s => s.parse().map_err(|_| {
                    CliError::Usage(format!("expected a number or \"all\" for -n, not {s:?}"))
                })?,
            };
            let json = match format.as_str() {
                "text" => false,
                "json" => true,
                other => return Err(CliError::Usage(format!("invalid format {other:?}"))),
            };
            conn.client()
                .stream_logs(&strs(&services), Some(n), follow, |e| {
                    if json {
                        print(&serde_json::to_string(&e).unwrap_or_default());
                    } else {
                        print(&e.to_text());
                    }
                    let _ = std::io::stdout().flush();
                })
                .await?;
        }
        PebbleCommand::Exec {
            user,
            uid,
            group,
            gid,
            env,
            working_dir,
            context,
            timeout,
            conn,
            command,
        } => {
            let mut req = ExecRequest::new(command);
            for kv in env {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("--env needs K=V, not {kv:?}")))?;
                req.environment.insert(k.to_string(), v.to_string());
            }
            req.user = user;
            req.user_id = uid;
            req.group = group;
            req.group_id = gid;
            req.working_dir = working_dir;
            req.service_context = context;
            req.timeout = timeout;
            let out = conn.client().exec(&req).await?;
            let _ = std::io::stdout().write_all(out.stdout.as_bytes());
            let _ = std::io::stderr().write_all(out.stderr.as_bytes());
            return Ok(out.exit_code & 0xff);
        }
        PebbleCommand::Checks { names, level, conn } => {
            let mut list = conn.client().checks(&strs(&names)).await?;
            if let Some(level) = &level {
                list.retain(|c| c.level.as_deref() == Some(level.as_str()));
            }
            if list.is_empty() {
                eprintln_safe("Plan has no health checks.");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.level.clone().unwrap_or_else(|| "-".into()),
                        c.startup.clone(),
                        c.status.clone(),
                        c.successes.to_string(),
                        format!("{}/{}", c.failures, c.threshold),
                    ]
                })
                .collect();
            print_table(
                &[
                    "Check",
                    "Level",
                    "Startup",
                    "Status",
                    "Successes",
                    "Failures",
                ],
                &rows,
            );
        }
        PebbleCommand::Check {
            name,
            refresh,
            conn,
        } => {
            let client = conn.client();
            let (info, err) = if refresh {
                client.refresh_check(&name).await?
            } else {
                let info = client
                    .checks(&[name.as_str()])
                    .await?
                    .pop()
                    .ok_or_else(|| {
                        CliError::Usage(format!("cannot find check with name {name:?}"))
                    })?;
                let err = info.error.clone();
                (info, err)
            };
            print(&format!("name: {}", info.name));
            if let Some(level) = &info.level {
                print(&format!("level: {level}"));
            }
            print(&format!("startup: {}", info.startup));
            print(&format!("status: {}", info.status));
            print(&format!("successes: {}", info.successes));
            print(&format!("failures: {}", info.failures));
            print(&format!("threshold: {}", info.threshold));
            if let Some(err) = err {
                print(&format!("error: {err:?}"));
            }
        }
        PebbleCommand::StartChecks { names, conn } => {
            let changed = conn.client().checks_action("start", &strs(&names)).await?;
            print_changed(&changed, "started");
        }
        PebbleCommand::StopChecks { names, conn } => {
            let changed = conn.client().checks_action("stop", &strs(&names)).await?;
            print_changed(&changed, "stopped");
        }
        PebbleCommand::Health { names, level, conn } => {
            let client = conn.client();
            let healthy = if names.is_empty() {
                client.health(level.as_deref()).await?
            } else {
                let checks = client.checks(&strs(&names)).await?;
                checks
                    .iter()
                    .filter(|c| c.status != "inactive")
                    .filter(|c| match level.as_deref() {
                        None => true,
                        Some("alive") => c.level.as_deref() == Some("alive"),
                        Some(_) => c.level.is_some(),
                    })
                    .all(|c| c.status == "up")
            };
            print(if healthy { "healthy" } else { "unhealthy" });
            return Ok(if healthy { 0 } else { 1 });
        }
        PebbleCommand::Signal {
            signal,
            services,
            conn,
        } => conn.client().signal(&signal, &strs(&services)).await?,
        PebbleCommand::LogTargets { conn } => {
            let list = conn.client().log_targets().await?;
            print_log_targets(&list);
        }
    }
    Ok(0)
}

fn print_changed(changed: &[String], verb: &str) {
    if changed.is_empty() {
        print(&format!("Checks already {verb}."));
    } else {
        print(&format!("Checks {verb}: {}", changed.join(", ")));
    }
}

async fn service_action(
    conn: &Conn,
    action: &str,
    names: &[String],
    no_wait: bool,
) -> Result<i32, CliError> {
    let client = conn.client();
    let id = client.services_action_no_wait(action, &strs(names)).await?;
    if no_wait {
        print(&id);
        return Ok(0);
    }
    client.wait_ok(&id).await?;
    Ok(0)
}

/// `today at 15:04 UTC`, or the date when it is not today.
fn since(s: &Option<String>) -> String {
    let Some(s) = s else { return "-".into() };
    let today = crate::timefmt::now();
    if s.len() >= 16 && s[..10] == today[..10] {
        format!("today at {} UTC", &s[11..16])
    } else {
        s.get(..10).unwrap_or(s).to_string()
    }
}

fn print_services(list: &[ServiceInfo]) {
    if list.is_empty() {
        eprintln_safe("Plan has no services.");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.startup.clone(),
                s.current.clone(),
                since(&s.current_since),
            ]
        })
        .collect();
    print_table(&["Service", "Startup", "Current", "Since"], &rows);
}

fn print_log_targets(list: &[LogTargetInfo]) {
    if list.is_empty() {
        eprintln_safe("Plan has no log targets.");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            let services = if t.services.is_empty() {
                "-".to_string()
            } else {
                t.services.join(",")
            };
            vec![
                t.name.clone(),
                t.type_.clone(),
                services,
                t.status.clone(),
                t.sent.to_string(),
                t.dropped.to_string(),
                t.buffered.to_string(),
                t.location.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "Target", "Type", "Services", "Status", "Sent", "Dropped", "Buffered", "Location",
        ],
        &rows,
    );
    for t in list {
        if let Some(e) = &t.error {
            print(&format!("{}: {e}", t.name));
        }
    }
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        print(&s);
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
