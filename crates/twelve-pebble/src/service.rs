//! The driver of one service: a task that owns the service's process and timers, feeds
//! events to its `state::Machine` and carries out the effects it returns.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use twelve_layer::{Service, ServiceAction};

use crate::logs::LogStore;
use crate::process::{self, Spec};
use crate::state::{Effect, Event, Exit, Machine, Policy, Sig, State};

pub type Reply = oneshot::Sender<Result<(), String>>;

pub enum Cmd {
    Start {
        spec: Box<Spec>,
        policy: Policy,
        config: Box<Service>,
        reply: Reply,
    },
    Stop {
        reply: Reply,
    },
    CheckFailed {
        check: String,
        action: ServiceAction,
    },
    Signal {
        signal: Signal,
        reply: Reply,
    },
}

/// What the API shows of a service, kept up to date by its driver.
#[derive(Debug, Clone)]
pub struct Info {
    pub state: State,
    /// When the status (not the internal state) last changed.
    pub since: Option<SystemTime>,
    pub pid: Option<u32>,
    pub start_count: u64,
    /// The config the current (or last) process was started with.
    pub started_with: Option<Service>,
}

#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Cmd>,
    info: Arc<Mutex<Info>>,
}

impl Handle {
    pub fn info(&self) -> Info {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn ask(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| "service driver is gone".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("service driver is gone".into()))
    }

    pub async fn start(&self, spec: Spec, policy: Policy, config: Service) -> Result<(), String> {
        self.ask(|reply| Cmd::Start {
            spec: Box::new(spec),
            policy,
            config: Box::new(config),
            reply,
        })
        .await
    }

    pub async fn stop(&self) -> Result<(), String> {
        self.ask(|reply| Cmd::Stop { reply }).await
    }

    pub async fn signal(&self, signal: Signal) -> Result<(), String> {
        self.ask(|reply| Cmd::Signal { signal, reply }).await
    }

    pub fn check_failed(&self, check: &str, action: ServiceAction) {
        let _ = self.tx.send(Cmd::CheckFailed {
            check: check.to_string(),
            action,
        });
    }
}

/// Starts the driver task of service `name`.
pub fn spawn_driver(
    name: &str,
    logs: Arc<LogStore>,
    shutdown: mpsc::UnboundedSender<i32>,
) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    let info = Arc::new(Mutex::new(Info {
        state: State::Initial,
        since: None,
        pid: None,
        start_count: 0,
        started_with: None,
    }));
    let driver = Driver {
        machine: Machine::new(name, Policy::default()),
        logs,
        shutdown,
        info: info.clone(),
        spec: None,
        config: None,
        child: None,
        pid: None,
        timer: None,
        reset: None,
        start_waiters: Vec::new(),
        stop_waiters: Vec::new(),
        draining: None,
        orphans: None,
        exited_group: None,
    };
    tokio::spawn(driver.run(rx));
    Handle { tx, info }
}

struct Driver {
    machine: Machine,
    logs: Arc<LogStore>,
    shutdown: mpsc::UnboundedSender<i32>,
    info: Arc<Mutex<Info>>,
    spec: Option<Spec>,
    config: Option<Service>,
    child: Option<Child>,
    /// The pid (and process group) of the current or last process.
    pid: Option<u32>,
    timer: Option<Instant>,
    reset: Option<Instant>,
    start_waiters: Vec<Reply>,
    stop_waiters: Vec<Reply>,
    /// The leader exited during a stop but its process group has not: its exit, held
    /// back until the group is empty.
    draining: Option<Exit>,
    /// The process group a leader left behind when it exited by itself (a SIGKILLed
    /// gunicorn master's workers) and the service restarts: sent SIGTERM then,
    /// SIGKILLed before the next start so that they cannot hold the service's port or
    /// files against it.
    orphans: Option<u32>,
    /// The group of a leader that just exited by itself, until its fate is known.
    exited_group: Option<u32>,
}

/// How often a stopping service's process group is checked for emptiness.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(50);

async fn wait_child(child: &mut Option<Child>) -> Exit {
    match child {
        Some(c) => process::wait(c).await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// 0–10% of `d`, as Pebble's `getJitter`.
fn jitter(d: std::time::Duration) -> std::time::Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    // A cheap mix of the clock; jitter needs spread, not secrecy.
    let mut x = nanos as u64 ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let frac = (x % 1000) as f64 / 10_000.0;
    d.mul_f64(frac)
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let event = tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(cmd) => match self.command(cmd) {
                        Some(e) => e,
                        None => continue,
                    },
                },
                exit = wait_child(&mut self.child) => {
                    self.child = None;
                    let stopping = matches!(self.machine.state, State::Terminating | State::Killing);
                    if stopping && self.pid.is_some_and(process::group_alive) {
                        // A stop ends when the whole group has: let the rest of it shut
                        // down gracefully until the kill delay, then SIGKILL it.
                        self.draining = Some(exit);
                        continue;
                    }
                    if !stopping {
                        // Acted on below once the exit is known to lead to a restart.
                        self.exited_group = self.pid.filter(|&p| process::group_alive(p));
                    }
                    Event::Exited(exit)
                }
                _ = tokio::time::sleep(DRAIN_POLL), if self.draining.is_some() => {
                    if self.pid.is_some_and(process::group_alive) {
                        continue;
                    }
                    match self.draining.take() {
                        Some(exit) => Event::Exited(exit),
                        None => continue,
                    }
                }
                _ = sleep_opt(self.timer) => {
                    self.timer = None;
                    Event::Timer
                }
                _ = sleep_opt(self.reset) => {
                    self.reset = None;
                    Event::ResetTimer
                }
            };
            self.feed(event);
            if let Some(pgid) = self.exited_group.take() {
                // What a leader that exited by itself left running stops now when the
                // service restarts (it would hold its port or files against the new
                // process); otherwise it is left alone, as in Pebble.
                if self.machine.state == State::Backoff {
                    process::signal_group(pgid, Signal::SIGTERM);
                    self.orphans = Some(pgid);
                }
            }
        }
    }

    fn command(&mut self, cmd: Cmd) -> Option<Event> {
        match cmd {
            Cmd::Start {
                spec,
                policy,
                config,
                reply,
            } => {
                if !matches!(self.machine.state, State::Starting | State::Running) {
                    self.spec = Some(*spec);
                    self.config = Some(*config);
                    self.machine.policy = policy;
                }
                self.start_waiters.push(reply);
                Some(Event::Start)
            }
            Cmd::Stop { reply } => {
                self.stop_waiters.push(reply);
                Some(Event::Stop)
            }
            Cmd::CheckFailed { check, action } => Some(Event::CheckFailed { check, action }),
            Cmd::Signal { signal, reply } => {
                let result = match (self.machine.state, self.pid) {
                    (State::Starting | State::Running, Some(pid)) => {
                        process::signal_pid(pid, signal)
                    }
                    _ => Err(format!(
                        "cannot send signal to {:?}: service is not running",
                        self.machine.name
                    )),
                };
                let _ = reply.send(result);
                None
            }
        }
    }

    fn feed(&mut self, first: Event) {
        let mut queue = VecDeque::from([first]);
        while let Some(event) = queue.pop_front() {
            let before = self.machine.state;
            for effect in self.machine.handle(event) {
                if let Some(next) = self.apply(effect) {
                    queue.push_back(next);
                }
            }
            self.publish(before);
        }
    }

    fn apply(&mut self, effect: Effect) -> Option<Event> {
        let now = Instant::now();
        match effect {
            Effect::Spawn => return Some(self.spawn()),
            Effect::Signal(sig) => {
                if let (Some(pid), true) =
                    (self.pid, self.child.is_some() || self.draining.is_some())
                {
                    let sig = match sig {
                        Sig::Term => Signal::SIGTERM,
                        Sig::Kill => Signal::SIGKILL,
                    };
                    process::signal_group(pid, sig);
                }
            }
            Effect::Timer(d) => self.timer = d.map(|d| now + d),
            Effect::BackoffTimer(d) => self.timer = Some(now + d + jitter(d)),
            Effect::ResetTimer(d) => self.reset = d.map(|d| now + d),
            Effect::StartDone(result) => {
                for w in self.start_waiters.drain(..) {
                    let _ = w.send(result.clone());
                }
            }
            Effect::StopDone(result) => {
                for w in self.stop_waiters.drain(..) {
                    let _ = w.send(result.clone());
                }
            }
            Effect::Shutdown(code) => {
                let _ = self.shutdown.send(code);
            }
            Effect::Log(msg) => crate::log(&msg),
        }
        None
    }

    fn spawn(&mut self) -> Event {
        let name = self.machine.name.clone();
        if let Some(pgid) = self.orphans.take() {
            if process::kill_orphaned_group(pgid) {
                crate::log(&format!(
                    "Service \"{name}\": killed what its last process left running"
                ));
            }
        }
        let Some(spec) = &self.spec else {
            return Event::SpawnFailed("no command".into());
        };
        match process::spawn(spec, false, false) {
            Ok(mut child) => {
                self.pid = child.id();
                if let Some(out) = child.stdout.take() {
                    tokio::spawn(crate::logs::capture(self.logs.clone(), name.clone(), out));
                }
                if let Some(err) = child.stderr.take() {
                    tokio::spawn(crate::logs::capture(self.logs.clone(), name.clone(), err));
                }
                self.child = Some(child);
                crate::log(&format!(
                    "Service \"{name}\" starting: {}",
                    spec.argv
                        .iter()
                        .map(|w| twelve_layer::quote_word(w))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
                let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
                info.started_with = self.config.clone();
                Event::Spawned
            }
            Err(e) => Event::SpawnFailed(e),
        }
    }

    fn publish(&self, before: State) {
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        let state = self.machine.state;
        if info.since.is_none() || before.status() != state.status() {
            info.since = Some(SystemTime::now());
        }
        info.state = state;
        info.pid = if self.child.is_some() { self.pid } else { None };
        info.start_count = self.machine.start_count;
    }
}
