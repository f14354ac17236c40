//! `twelve statsd-exporter`: the exporter a Flask or Django unit runs beside gunicorn.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use crate::server::{serve, Config};

#[derive(clap::Args, Debug, Clone)]
pub struct StatsdArgs {
    /// Where statsd metrics are received, over UDP and TCP (statsd_exporter's
    /// `--statsd.listen-udp`/`--statsd.listen-tcp`; the charms use localhost:9125).
    #[arg(long, default_value = "127.0.0.1:9125", value_parser = parse_addr)]
    pub statsd_listen: SocketAddr,
    /// Receive statsd over UDP only.
    #[arg(long)]
    pub no_tcp: bool,
    /// Where Prometheus scrapes (statsd_exporter's `--web.listen-address`).
    #[arg(long, default_value = "0.0.0.0:9102", value_parser = parse_addr)]
    pub web_listen: SocketAddr,
    /// The path of the metrics page.
    #[arg(long, default_value = "/metrics")]
    pub web_path: String,
    /// The prefix of gunicorn's mapped metrics: `flask` gives flask_requests,
    /// flask_response_code{status} and flask_request_duration.
    #[arg(long, default_value = "flask")]
    pub prefix: String,
}

/// `host:port` (a name such as `localhost` resolves, IPv4 first) or `:port` (every
/// interface), as statsd_exporter's flags take.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let full = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_string(),
    };
    let addrs: Vec<SocketAddr> = full
        .to_socket_addrs()
        .map_err(|e| format!("{s:?} is not a host:port address ({e})"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

pub fn cli_main(args: StatsdArgs) -> ExitCode {
    if !args.web_path.starts_with('/') {
        eprintln!(
            "error: --web-path must start with '/', not {:?}",
            args.web_path
        );
        return ExitCode::FAILURE;
    }
    let config = Config {
        statsd_udp: Some(args.statsd_listen),
        statsd_tcp: (!args.no_tcp).then_some(args.statsd_listen),
        web: args.web_listen,
        metrics_path: args.web_path,
        prefix: args.prefix,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "statsd-exporter: statsd on {} (UDP{}), metrics on http://{}{}",
        args.statsd_listen,
        if config.statsd_tcp.is_some() {
            " and TCP"
        } else {
            ""
        },
        config.web,
        config.metrics_path
    );
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_statsd_exporter_takes_them() {
        assert_eq!(
            parse_addr("127.0.0.1:9125").unwrap(),
            "127.0.0.1:9125".parse().unwrap()
        );
        assert_eq!(
            parse_addr(":9102").unwrap(),
            "0.0.0.0:9102".parse().unwrap()
        );
        assert_eq!(
            parse_addr("localhost:9125").unwrap(),
            "127.0.0.1:9125".parse().unwrap()
        );
        assert!(parse_addr("nonsense").is_err());
    }
}
