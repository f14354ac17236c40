//! Health checks: http (2xx), tcp (connect) and exec (exit 0), each run every `period`
//! by its own task (first run after one period, as Pebble), going down after `threshold`
//! consecutive failures and telling the services that list it in `on-check-failure`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use twelve_layer::{Check, CheckLevel, Plan, Startup};

use crate::manager::{ExecContext, Manager};
use crate::process::IdentitySpec;
use crate::types::CheckInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Up,
    Down,
    Inactive,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Up => "up",
            CheckStatus::Down => "down",
            CheckStatus::Inactive => "inactive",
        }
    }
}

struct Entry {
    config: Check,
    status: CheckStatus,
    successes: u64,
    failures: u32,
    error: Option<String>,
    /// Bumped on every (re)start so results of an old task are ignored.
    generation: u64,
    task: Option<tokio::task::AbortHandle>,
}

#[derive(Default)]
pub struct Checks {
    entries: Mutex<BTreeMap<String, Entry>>,
}

pub fn level_str(l: Option<CheckLevel>) -> Option<String> {
    l.map(|l| {
        match l {
            CheckLevel::Alive => "alive",
            CheckLevel::Ready => "ready",
        }
        .to_string()
    })
}

impl Checks {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn infos(&self, names: &[String], level: Option<CheckLevel>) -> Vec<CheckInfo> {
        self.lock()
            .iter()
            .filter(|(n, _)| names.is_empty() || names.contains(n))
            .filter(|(_, e)| level.is_none() || e.config.level == level)
            .map(|(name, e)| CheckInfo {
                name: name.clone(),
                level: level_str(e.config.level),
                startup: e.config.startup().as_str().to_string(),
                status: e.status.as_str().to_string(),
                successes: e.successes,
                failures: e.failures,
                threshold: e.config.threshold(),
                error: e.error.clone(),
            })
            .collect()
    }

    /// `/v1/health`: every active check that the level covers is up. Ready covers alive
    /// checks too (not alive means not ready); no level covers every check.
    pub fn healthy(&self, level: Option<CheckLevel>, names: &[String]) -> bool {
        self.lock()
            .iter()
            .filter(|(n, _)| names.is_empty() || names.contains(n))
            .filter(|(_, e)| e.status != CheckStatus::Inactive)
            .filter(|(_, e)| match level {
                None => true,
                Some(CheckLevel::Alive) => e.config.level == Some(CheckLevel::Alive),
                Some(CheckLevel::Ready) => e.config.level.is_some(),
            })
            .all(|(_, e)| e.status == CheckStatus::Up)
    }

    /// Metrics rows: (name, up, successes, failures).
    pub fn metrics(&self) -> Vec<(String, bool, u64, u32)> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.status != CheckStatus::Inactive)
            .map(|(n, e)| {
                (
                    n.clone(),
                    e.status == CheckStatus::Up,
                    e.successes,
                    e.failures,
                )
            })
            .collect()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }
}

/// Brings the running checks in line with the plan: new enabled checks start, changed
/// ones restart, removed ones stop.
pub fn reconcile(mgr: &Arc<Manager>, plan: &Plan) {
    let mut to_start = Vec::new();
    {
        let mut entries = mgr.checks.lock();
        entries.retain(|name, e| {
            let keep = plan.checks.contains_key(name);
            if !keep {
                if let Some(t) = e.task.take() {
                    t.abort();
                }
            }
            keep
        });
        for (name, config) in &plan.checks {
            match entries.get_mut(name) {
                Some(e) if &e.config == config => {}
                Some(e) => {
                    let was_running = e.task.is_some();
                    if let Some(t) = e.task.take() {
                        t.abort();
                    }
                    *e = new_entry(config);
                    if was_running || config.startup() == Startup::Enabled {
                        to_start.push(name.clone());
                    }
                }
                None => {
                    entries.insert(name.clone(), new_entry(config));
                    if config.startup() == Startup::Enabled {
                        to_start.push(name.clone());
                    }
                }
            }
        }
    }
    for name in to_start {
        start(mgr, &name);
    }
}

fn new_entry(config: &Check) -> Entry {
    Entry {
        config: config.clone(),
        status: CheckStatus::Inactive,
        successes: 0,
        failures: 0,
        error: None,
        generation: 0,
        task: None,
    }
}

/// Starts a check's task if it is not running. False if there is no such check.
pub fn start(mgr: &Arc<Manager>, name: &str) -> bool {
    let mut entries = mgr.checks.lock();
    let Some(e) = entries.get_mut(name) else {
        return false;
    };
    if e.task.is_some() {
        return true;
    }
    e.generation += 1;
    e.status = CheckStatus::Up;
    e.failures = 0;
    let generation = e.generation;
    let config = e.config.clone();
    let me = mgr.clone();
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let period = config.period();
        let mut next = tokio::time::Instant::now() + period;
        loop {
            tokio::time::sleep_until(next).await;
            let result = perform(&me, &config).await;
            record(&me, &name, generation, result);
            next += period;
            let now = tokio::time::Instant::now();
            if next < now {
                next = now + period;
            }
        }
    });
    e.task = Some(task.abort_handle());
    true
}

/// Stops a check's task; it shows as inactive. False if there is no such check.
pub fn stop(mgr: &Manager, name: &str) -> bool {
    let mut entries = mgr.checks.lock();
    let Some(e) = entries.get_mut(name) else {
        return false;
    };
    if let Some(t) = e.task.take() {
        t.abort();
    }
    e.generation += 1;
    e.status = CheckStatus::Inactive;
    true
}

/// Runs a check now (`/v1/checks/refresh`), records and returns the result.
pub async fn refresh(mgr: &Arc<Manager>, name: &str) -> Option<(CheckInfo, Option<String>)> {
    let (config, generation) = {
        let entries = mgr.checks.lock();
        let e = entries.get(name)?;
        (e.config.clone(), e.generation)
    };
    let result = perform(mgr, &config).await;
    let err = result.as_ref().err().cloned();
    record(mgr, name, generation, result);
    let info = mgr.checks.infos(&[name.to_string()], None).pop()?;
    Some((info, err))
}

fn record(mgr: &Manager, name: &str, generation: u64, result: Result<(), String>) {
    let went_down = {
        let mut entries = mgr.checks.lock();
        let Some(e) = entries.get_mut(name) else {
            return;
        };
        if e.generation != generation {
            return;
        }
        match result {
            Ok(()) => {
                if e.status == CheckStatus::Down {
                    crate::log(&format!("Check \"{name}\" is up again"));
                }
                e.successes += 1;
                e.failures = 0;
                e.error = None;
                if e.status != CheckStatus::Inactive {
                    e.status = CheckStatus::Up;
                }
                false
            }
            Err(err) => {
                e.failures = e.failures.saturating_add(1);
                let threshold = e.config.threshold();
                crate::log(&format!(
                    "Check \"{name}\" failure {}/{threshold}: {err}",
                    e.failures
                ));
                e.error = Some(err);
                if e.failures == threshold && e.status != CheckStatus::Inactive {
                    e.status = CheckStatus::Down;
                    true
                } else {
                    false
                }
            }
        }
    };
    if went_down {
        crate::log(&format!("Check \"{name}\" threshold reached: down"));
        mgr.check_failed(name);
    }
}

async fn perform(mgr: &Arc<Manager>, c: &Check) -> Result<(), String> {
    let timeout = c.timeout();
    if let Some(e) = &c.exec {
        // Kills the command's process group itself when the timeout passes.
        return exec_check(mgr, e, timeout).await;
    }
    let work = async {
        if let Some(h) = &c.http {
            http_check(h.url.as_deref().unwrap_or(""), &h.headers).await
        } else if let Some(t) = &c.tcp {
            tcp_check(
                t.host.as_deref().unwrap_or("localhost"),
                t.port.unwrap_or(0),
            )
            .await
        } else {
            Err("no check type".into())
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timed out after {}",
            twelve_layer::format_go_duration(timeout)
        )),
    }
}

async fn tcp_check(host: &str, port: u16) -> Result<(), String> {
    tokio::net::TcpStream::connect((host, port))
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))
}

/// The first 512 bytes and 5 lines of `out`, as Pebble attaches to check errors.
fn excerpt(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(&out[..out.len().min(512)]).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    tail.join("\n")
}

async fn http_check(url: &str, headers: &indexmap::IndexMap<String, String>) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("unsupported URL scheme in {url:?} (only http)"));
    }
    let host = uri.host().ok_or_else(|| format!("no host in {url:?}"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .unwrap_or(host)
        .to_string();
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, authority);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Err(format!(
        "non-20x status code {}; {}",
        status.as_u16(),
        excerpt(&body)
    ))
}

async fn exec_check(
    mgr: &Arc<Manager>,
    e: &twelve_layer::ExecCheck,
    timeout: Duration,
) -> Result<(), String> {
    let command = twelve_layer::Command::parse(e.command.as_deref().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    let spec = mgr.context_spec(ExecContext {
        argv: command.argv(),
        service_context: e.service_context.as_deref(),
        environment: &e.environment,
        working_dir: e.working_dir.clone(),
        identity: IdentitySpec {
            user: e.user.clone(),
            user_id: e.user_id,
            group: e.group.clone(),
            group_id: e.group_id,
        },
    })?;
    let out = crate::process::run_to_completion(&spec, None, Some(timeout), 512).await?;
    if out.timed_out {
        return Err(format!(
            "timed out after {}",
            twelve_layer::format_go_duration(timeout)
        ));
    }
    if out.exit_code == 0 {
        Ok(())
    } else {
        let mut both = out.stdout;
        both.extend_from_slice(&out.stderr);
        Err(format!("exit status {}; {}", out.exit_code, excerpt(&both)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(level: Option<CheckLevel>, status: CheckStatus) -> Entry {
        let mut e = new_entry(&Check {
            level,
            ..Check::default()
        });
        e.status = status;
        e
    }

    #[test]
    fn health_levels_follow_pebble() {
        use CheckLevel::{Alive, Ready};
        use CheckStatus::{Down, Inactive, Up};
        // (checks, level asked, healthy)
        type Row = (
            Vec<(Option<CheckLevel>, CheckStatus)>,
            Option<CheckLevel>,
            bool,
        );
        let table: Vec<Row> = vec![
            (vec![], None, true),
            (vec![], Some(Ready), true),
            (vec![(Some(Ready), Down)], Some(Alive), true),
            (vec![(Some(Ready), Down)], Some(Ready), false),
            (vec![(Some(Alive), Down)], Some(Ready), false),
            (vec![(None, Down)], Some(Ready), true),
            (vec![(None, Down)], None, false),
            (vec![(Some(Alive), Inactive)], Some(Alive), true),
            (
                vec![(Some(Alive), Up), (Some(Ready), Up)],
                Some(Ready),
                true,
            ),
        ];
        for (checks, level, healthy) in table {
            let c = Checks::default();
            for (i, (l, s)) in checks.iter().enumerate() {
                c.lock().insert(format!("c{i}"), entry(*l, *s));
            }
            assert_eq!(c.healthy(level, &[]), healthy, "{checks:?} {level:?}");
        }
    }

    #[test]
    fn error_excerpts_keep_the_last_five_lines_of_512_bytes() {
        let out = (1..=8).map(|i| format!("line {i}\n")).collect::<String>();
        assert_eq!(
            excerpt(out.as_bytes()),
            "line 4\nline 5\nline 6\nline 7\nline 8"
        );
        assert_eq!(excerpt(&[b'x'; 600]).len(), 512);
    }
}
