//! `twelve ingress ...`: run the proxy, or ask a running one through its admin socket.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::admin::client;
use crate::routes::RouteTable;
use crate::server::{IngressConfig, IngressHandle, DEFAULT_PORT, SOCKET_FILE};

#[derive(clap::Args, Debug, Clone)]
pub struct IngressArgs {
    #[command(subcommand)]
    pub command: IngressCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum IngressCommand {
    /// Run the ingress in the foreground (the controller starts it and keeps it running)
    Run(RunArgs),
    /// Print the route table of a running ingress (JSON)
    Routes(DirArg),
    /// Replace the route table of a running ingress with a JSON file ('-' reads stdin)
    SetRoutes {
        #[command(flatten)]
        dir: DirArg,
        file: PathBuf,
    },
    /// Print the requests in flight to each backend (JSON)
    Inflight(DirArg),
    /// Print the request metrics (Prometheus text format)
    Metrics(DirArg),
    /// Set the controller's ingress listeners (persisted; the ingress restarts on them)
    Configure {
        /// The plain HTTP listener, IP:PORT (default 127.0.0.1:8080)
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// The HTTPS listener, IP:PORT (default: none)
        #[arg(long, value_name = "ADDR")]
        https: Option<String>,
        /// Turn the HTTPS listener off
        #[arg(long, conflicts_with = "https")]
        no_https: bool,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct DirArg {
    /// The ingress state directory (routes.json, ingress.sock, ingress.pid)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The public port: http://<app>.localhost:PORT/ and http://localhost:PORT/<app>/
    #[arg(long, default_value_t = DEFAULT_PORT, env = "TWELVE_INGRESS_PORT")]
    pub port: u16,
    /// The address to listen on
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub bind: IpAddr,
    /// The state directory: routes.json (last routes, loaded at start), ingress.sock (admin
    /// API), ingress.pid
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Threads serving client connections (each with its own event loop and upstream pool)
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seconds a stopping ingress (SIGTERM) waits for requests in flight
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub drain_timeout: u64,
    /// Also serve HTTPS on this address (IP:PORT) with the route table's certificates
    #[arg(long, value_name = "ADDR", env = "TWELVE_INGRESS_HTTPS")]
    pub https: Option<std::net::SocketAddr>,
}

pub fn cli_main(args: IngressArgs) -> ExitCode {
    // Client connections are served on `--workers` threads of their own; this runtime
    // accepts them and serves the admin socket.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_command(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Prints a result; a closed pipe (`| head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
}

fn socket(dir: &Path) -> PathBuf {
    dir.join(SOCKET_FILE)
}

async fn run_command(command: IngressCommand) -> Result<(), BoxError> {
    match command {
        IngressCommand::Run(args) => run(args).await,
        IngressCommand::Routes(d) => {
            let table = client::get_routes(&socket(&d.dir)).await?;
            out(&serde_json::to_string_pretty(&table)?);
            Ok(())
        }
        IngressCommand::SetRoutes { dir, file } => {
            let mut bytes = Vec::new();
            if file.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut bytes)?;
            } else {
                bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            }
            let table = RouteTable::from_json(&bytes)?;
            client::put_routes(&socket(&dir.dir), &table).await?;
            Ok(())
        }
        IngressCommand::Inflight(d) => {
            let list = client::get_inflight(&socket(&d.dir)).await?;
            out(&serde_json::to_string_pretty(&list)?);
            Ok(())
        }
        IngressCommand::Metrics(d) => {
            out(client::get_metrics(&socket(&d.dir)).await?.trim_end());
            Ok(())
        }
        IngressCommand::Configure { .. } => Err(
            "`ingress configure` is the controller's: run it as `twelve ingress configure`".into(),
        ),
    }
}

async fn run(args: RunArgs) -> Result<(), BoxError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // The controller may go away; the ingress stays.
    let mut hup = signal(SignalKind::hangup())?;

    let config = IngressConfig {
        bind: args.bind,
        port: args.port,
        dir: args.dir,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        workers: args.workers.max(1),
        https: args.https,
    };
    let handle = IngressHandle::start(config).await?;
    let https = handle
        .https_addr()
        .map(|a| format!(" and https://{a}"))
        .unwrap_or_default();
    eprintln!(
        "twelve ingress: serving http://{}{https} (admin API on {})",
        handle.addr(),
        handle.admin_socket().display()
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => continue,
        }
    }
    eprintln!("twelve ingress: stopping, draining requests in flight");
    handle.shutdown().await;
    Ok(())
}
