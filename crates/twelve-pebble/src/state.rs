//! The service state machine, pure: every state and transition of a supervised service is
//! named here, and `Machine::handle` turns an event into effects for the driver
//! (`service.rs`) to carry out. No processes, no clocks: unit-testable as a table.
//!
//! Mirrors Pebble's servstate handlers (reference/pebble.md §2).

use std::time::Duration;

use twelve_layer::{Service, ServiceAction};

/// A started process must survive this long for `start` to succeed.
pub const OKAY_DELAY: Duration = Duration::from_secs(1);
/// After SIGKILL, how long to wait before the stop is declared failed.
pub const FAIL_DELAY: Duration = Duration::from_secs(5);

/// Pebble's internal service states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Never started.
    Initial,
    /// Process started, within the okay delay.
    Starting,
    Running,
    /// SIGTERM sent to the process group.
    Terminating,
    /// SIGKILL sent to the process group.
    Killing,
    Stopped,
    /// Waiting to restart.
    Backoff,
    /// Exited and not restarting (failure, or failed to spawn).
    Exited,
}

/// What the API and CLI show (`current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Inactive,
    Backoff,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Backoff => "backoff",
            Status::Error => "error",
        }
    }
}

impl State {
    pub fn status(self) -> Status {
        match self {
            // Pebble maps its transient `initial` to error, but a never-started service
            // shows as inactive; twelve only uses Initial for never-started services.
            State::Initial => Status::Inactive,
            State::Starting | State::Running => Status::Active,
            State::Terminating | State::Killing | State::Stopped => Status::Inactive,
            State::Backoff => Status::Backoff,
            State::Exited => Status::Error,
        }
    }

    /// A process exists (or a restart is pending) that a stop would end.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            State::Starting | State::Running | State::Backoff | State::Terminating | State::Killing
        )
    }
}

/// The parts of a service's config that steer the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub on_success: ServiceAction,
    pub on_failure: ServiceAction,
    pub backoff_delay: Duration,
    pub backoff_factor: f64,
    pub backoff_limit: Duration,
    pub kill_delay: Duration,
}

impl Policy {
    pub fn of(s: &Service) -> Policy {
        Policy {
            on_success: s.on_success(),
            on_failure: s.on_failure(),
            backoff_delay: s.backoff_delay(),
            backoff_factor: s.backoff_factor(),
            backoff_limit: s.backoff_limit(),
            kill_delay: s.kill_delay(),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::of(&Service::default())
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or None when killed by a signal.
    pub code: Option<i32>,
}

impl Exit {
    pub fn success(self) -> bool {
        self.code == Some(0)
    }
    /// As Go's `ExitCode()`: -1 when killed by a signal.
    pub fn code_or_minus_one(self) -> i32 {
        self.code.unwrap_or(-1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `start` asked for (also used by replan/autostart/restart).
    Start,
    /// The driver spawned the process it was asked to.
    Spawned,
    SpawnFailed(String),
    Exited(Exit),
    Stop,
    /// The state timer fired (okay delay, kill delay, fail delay or backoff, by state).
    Timer,
    /// The process has run for backoff-limit: forget the backoff.
    ResetTimer,
    /// A check this service lists in `on-check-failure` went down.
    CheckFailed {
        check: String,
        action: ServiceAction,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Kill,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Spawn the process; answer with `Spawned` or `SpawnFailed`.
    Spawn,
    /// Signal the process group.
    Signal(Sig),
    /// Arm (or with None, cancel) the state timer.
    Timer(Option<Duration>),
    /// Arm the state timer for a backoff of this length (the driver adds jitter).
    BackoffTimer(Duration),
    /// Arm or cancel the backoff-reset timer.
    ResetTimer(Option<Duration>),
    /// Answer everyone waiting for the start to finish.
    StartDone(Result<(), String>),
    /// Answer everyone waiting for the stop to finish.
    StopDone(Result<(), String>),
    /// Ask the daemon to shut down, exiting with this code.
    Shutdown(i32),
    /// A line for the daemon's own log.
    Log(String),
}

/// One service's state and backoff bookkeeping.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub state: State,
    pub policy: Policy,
    /// The current backoff (zero: none yet, or reset).
    pub backoff: Duration,
    /// How many backoff restarts since the last reset.
    pub backoff_count: u32,
    /// Times a process was spawned.
    pub start_count: u64,
    /// The next `Spawned` comes from a backoff restart (straight to Running).
    spawn_is_restart: bool,
    /// The process is being stopped because a check failed: restart once it exits.
    restart_after_stop: bool,
}

/// `calculateNextBackoff`: first the delay, then ×factor up to the limit.
pub fn next_backoff(current: Duration, p: &Policy) -> Duration {
    if current.is_zero() {
        return p.backoff_delay.min(p.backoff_limit);
    }
    let next = current.as_secs_f64() * p.backoff_factor;
    if next >= p.backoff_limit.as_secs_f64() {
        p.backoff_limit
    } else {
        Duration::from_secs_f64(next)
    }
}

/// The exit code the daemon uses for a shutdown action.
fn shutdown_code(action: ServiceAction, success: bool) -> i32 {
    match action {
        ServiceAction::SuccessShutdown => 0,
        ServiceAction::FailureShutdown => 10,
        _ if success => 0,
        _ => 10,
    }
}

fn action_name(a: ServiceAction) -> &'static str {
    match a {
        ServiceAction::Restart => "restart",
        ServiceAction::Shutdown => "shutdown",
        ServiceAction::FailureShutdown => "failure-shutdown",
        ServiceAction::SuccessShutdown => "success-shutdown",
        ServiceAction::Ignore => "ignore",
    }
}

impl Machine {
    pub fn new(name: &str, policy: Policy) -> Machine {
        Machine {
            name: name.to_string(),
            state: State::Initial,
            policy,
            backoff: Duration::ZERO,
            backoff_count: 0,
            start_count: 0,
            spawn_is_restart: false,
            restart_after_stop: false,
        }
    }

    pub fn handle(&mut self, event: Event) -> Vec<Effect> {
        use Effect as E;
        use State as S;
        let name = self.name.clone();
        match (self.state, event) {
            // --- start ---
            (S::Initial | S::Stopped | S::Exited | S::Backoff, Event::Start) => {
                self.backoff = Duration::ZERO;
                self.backoff_count = 0;
                self.spawn_is_restart = false;
                self.restart_after_stop = false;
                vec![E::Timer(None), E::Spawn]
            }
            (S::Starting, Event::Start) => vec![],
            (S::Running, Event::Start) => vec![E::StartDone(Ok(()))],
            (S::Terminating | S::Killing, Event::Start) => vec![E::StartDone(Err(
                "cannot start service while it is being stopped".into(),
            ))],
            (_, Event::Spawned) => {
                self.start_count += 1;
                let reset = E::ResetTimer(Some(self.policy.backoff_limit));
                if self.spawn_is_restart {
                    self.spawn_is_restart = false;
                    self.state = S::Running;
                    vec![reset]
                } else {
                    self.state = S::Starting;
                    vec![E::Timer(Some(OKAY_DELAY)), reset]
                }
            }
            (_, Event::SpawnFailed(err)) => {
                let was_restart = std::mem::take(&mut self.spawn_is_restart);
                self.state = S::Exited;
                let msg = format!("cannot start service: {err}");
                let mut out = vec![E::Log(format!("Service \"{name}\" {msg}"))];
                if !was_restart {
                    out.push(E::StartDone(Err(msg)));
                }
                out
            }
            // --- the okay delay, and the backoff reset ---
            (S::Starting, Event::Timer) => {
                self.state = S::Running;
                vec![E::StartDone(Ok(()))]
            }
            (S::Starting | S::Running, Event::ResetTimer) => {
                if !self.backoff.is_zero() {
                    self.backoff = Duration::ZERO;
                    self.backoff_count = 0;
                }
                vec![]
            }
            // --- the process exits by itself ---
            (S::Starting, Event::Exited(exit)) => {
                let action = self.exit_action(exit);
                let msg = format!(
                    "cannot start service: exited quickly with code {}, will {}",
                    exit.code_or_minus_one(),
                    action_name(action)
                );
                let mut out = vec![E::StartDone(Err(msg))];
                out.extend(self.after_exit(exit, action));
                out
            }
            (S::Running, Event::Exited(exit)) => {
                let action = self.exit_action(exit);
                self.after_exit(exit, action)
            }
            // --- stop ---
            (S::Starting | S::Running, Event::Stop) => {
                let mut out = vec![];
                if self.state == S::Starting {
                    out.push(E::StartDone(Err("service stopped while starting".into())));
                }
                self.state = S::Terminating;
                out.extend([
                    E::Signal(Sig::Term),
                    E::Timer(Some(self.policy.kill_delay)),
                    E::ResetTimer(None),
                ]);
                out
            }
            (S::Terminating | S::Killing, Event::Stop) => {
                // A stop asked while stopping just waits for it.
                self.restart_after_stop = false;
                vec![]
            }
            (S::Backoff, Event::Stop) => {
                self.state = S::Stopped;
                vec![E::Timer(None), E::StopDone(Ok(()))]
            }
            (S::Initial | S::Stopped | S::Exited, Event::Stop) => vec![E::StopDone(Ok(()))],
            (S::Terminating, Event::Timer) => {
                self.state = S::Killing;
                vec![
                    E::Log(format!(
                        "Service \"{name}\" still running after SIGTERM and {}; sending SIGKILL",
                        twelve_layer::format_go_duration(self.policy.kill_delay)
                    )),
                    E::Signal(Sig::Kill),
                    E::Timer(Some(FAIL_DELAY)),
                ]
            }
            (S::Killing, Event::Timer) => vec![E::StopDone(Err(
                "process still running after SIGTERM and SIGKILL".into(),
            ))],
            (S::Terminating | S::Killing, Event::Exited(_)) => {
                let mut out = vec![E::Timer(None)];
                if std::mem::take(&mut self.restart_after_stop) {
                    out.push(E::StopDone(Ok(())));
                    out.extend(self.enter_backoff());
                } else {
                    self.state = S::Stopped;
                    out.push(E::Log(format!("Service \"{name}\" stopped")));
                    out.push(E::StopDone(Ok(())));
                }
                out
            }
            // --- backoff ---
            (S::Backoff, Event::Timer) => {
                self.spawn_is_restart = true;
                vec![E::Spawn]
            }
            // --- checks ---
            (state, Event::CheckFailed { check, action }) => match action {
                ServiceAction::Restart => match state {
                    S::Starting | S::Running => {
                        self.restart_after_stop = true;
                        self.state = S::Terminating;
                        vec![
                            E::Log(format!(
                                "Service \"{name}\" check \"{check}\" failed, restarting"
                            )),
                            E::Signal(Sig::Term),
                            E::Timer(Some(self.policy.kill_delay)),
                            E::ResetTimer(None),
                        ]
                    }
                    S::Exited => self.enter_backoff(),
                    _ => vec![],
                },
                ServiceAction::Shutdown | ServiceAction::FailureShutdown => vec![
                    E::Log(format!(
                        "Service \"{name}\" check \"{check}\" failed, triggering shutdown"
                    )),
                    E::Shutdown(11),
                ],
                ServiceAction::SuccessShutdown => vec![
                    E::Log(format!(
                        "Service \"{name}\" check \"{check}\" failed, triggering success shutdown"
                    )),
                    E::Shutdown(0),
                ],
                ServiceAction::Ignore => vec![],
            },
            // Anything else is stale (a timer that raced a state change, and so on).
            _ => vec![],
        }
    }

    fn exit_action(&self, exit: Exit) -> ServiceAction {
        if exit.success() {
            self.policy.on_success
        } else {
            self.policy.on_failure
        }
    }

    fn after_exit(&mut self, exit: Exit, action: ServiceAction) -> Vec<Effect> {
        use Effect as E;
        let name = self.name.clone();
        let code = exit.code_or_minus_one();
        let which = if exit.success() {
            "on-success"
        } else {
            "on-failure"
        };
        let mut out = vec![E::Timer(None), E::ResetTimer(None)];
        match action {
            ServiceAction::Restart => {
                out.push(E::Log(format!(
                    "Service \"{name}\" stopped unexpectedly with code {code}"
                )));
                out.extend(self.enter_backoff());
            }
            ServiceAction::Ignore => {
                self.state = if exit.success() {
                    State::Stopped
                } else {
                    State::Exited
                };
                out.push(E::Log(format!(
                    "Service \"{name}\" exited with code {code}; {which} action is ignore"
                )));
            }
            shutdown => {
                self.state = if exit.success() {
                    State::Stopped
                } else {
                    State::Exited
                };
                out.push(E::Log(format!(
                    "Service \"{name}\" exited with code {code}; {which} action is {}, triggering shutdown",
                    action_name(shutdown)
                )));
                out.push(E::Shutdown(shutdown_code(shutdown, exit.success())));
            }
        }
        out
    }

    fn enter_backoff(&mut self) -> Vec<Effect> {
        self.backoff = next_backoff(self.backoff, &self.policy);
        self.backoff_count += 1;
        self.state = State::Backoff;
        vec![
            Effect::Log(format!(
                "Service \"{}\" waiting ~{} before restart (backoff {})",
                self.name,
                twelve_layer::format_go_duration(self.backoff),
                self.backoff_count
            )),
            Effect::BackoffTimer(self.backoff),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect as E;
    use State as S;

    fn policy() -> Policy {
        Policy {
            backoff_delay: Duration::from_millis(100),
            backoff_factor: 2.0,
            backoff_limit: Duration::from_millis(500),
            kill_delay: Duration::from_secs(2),
            ..Policy::default()
        }
    }

    fn quiet(effects: Vec<Effect>) -> Vec<Effect> {
        effects
            .into_iter()
            .filter(|e| !matches!(e, E::Log(_)))
            .collect()
    }

    fn running() -> Machine {
        let mut m = Machine::new("svc", policy());
        m.handle(Event::Start);
        m.handle(Event::Spawned);
        m.handle(Event::Timer);
        assert_eq!(m.state, S::Running);
        m
    }

    const FAIL: Exit = Exit { code: Some(3) };
    const OK: Exit = Exit { code: Some(0) };

    #[test]
    fn status_mapping_matches_pebble() {
        let table = [
            (S::Initial, Status::Inactive),
            (S::Starting, Status::Active),
            (S::Running, Status::Active),
            (S::Terminating, Status::Inactive),
            (S::Killing, Status::Inactive),
            (S::Stopped, Status::Inactive),
            (S::Backoff, Status::Backoff),
            (S::Exited, Status::Error),
        ];
        for (state, status) in table {
            assert_eq!(state.status(), status, "{state:?}");
        }
    }

    #[test]
    fn start_succeeds_after_the_okay_delay() {
        let mut m = Machine::new("svc", policy());
        assert_eq!(m.handle(Event::Start), vec![E::Timer(None), E::Spawn]);
        assert_eq!(
            m.handle(Event::Spawned),
            vec![
                E::Timer(Some(OKAY_DELAY)),
                E::ResetTimer(Some(Duration::from_millis(500)))
            ]
        );
        assert_eq!(m.state, S::Starting);
        assert_eq!(m.handle(Event::Timer), vec![E::StartDone(Ok(()))]);
        assert_eq!(m.state, S::Running);
        assert_eq!(m.start_count, 1);
    }

    #[test]
    fn quick_exit_fails_the_start_but_still_restarts() {
        let mut m = Machine::new("svc", policy());
        m.handle(Event::Start);
        m.handle(Event::Spawned);
        let out = quiet(m.handle(Event::Exited(FAIL)));
        assert_eq!(
            out[0],
            E::StartDone(Err(
                "cannot start service: exited quickly with code 3, will restart".into()
            ))
        );
        assert!(out.contains(&E::BackoffTimer(Duration::from_millis(100))));
        assert_eq!(m.state, S::Backoff);
    }

    #[test]
    fn backoff_grows_by_factor_up_to_the_limit_and_restarts_straight_to_running() {
        let mut m = running();
        let mut seen = vec![];
        for _ in 0..5 {
            let out = m.handle(Event::Exited(FAIL));
            let d = out.iter().find_map(|e| match e {
                E::BackoffTimer(d) => Some(d.as_millis()),
                _ => None,
            });
            seen.push(d.unwrap());
            assert_eq!(m.handle(Event::Timer), vec![E::Spawn]);
            m.handle(Event::Spawned);
            assert_eq!(m.state, S::Running);
        }
        assert_eq!(seen, [100, 200, 400, 500, 500]);
        // Running for backoff-limit forgets the backoff.
        m.handle(Event::ResetTimer);
        assert_eq!(m.backoff, Duration::ZERO);
        let out = m.handle(Event::Exited(FAIL));
        assert!(out.contains(&E::BackoffTimer(Duration::from_millis(100))));
    }

    #[test]
    fn default_backoff_sequence() {
        let p = Policy::default();
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..8 {
            d = next_backoff(d, &p);
            seen.push(d.as_secs_f64());
        }
        assert_eq!(seen, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
    }

    #[test]
    fn stop_sends_term_then_kill_then_gives_up() {
        let mut m = running();
        assert_eq!(
            m.handle(Event::Stop),
            vec![
                E::Signal(Sig::Term),
                E::Timer(Some(Duration::from_secs(2))),
                E::ResetTimer(None)
            ]
        );
        assert_eq!(m.state.status(), Status::Inactive);
        assert_eq!(
            quiet(m.handle(Event::Timer)),
            vec![E::Signal(Sig::Kill), E::Timer(Some(FAIL_DELAY))]
        );
        assert_eq!(m.state, S::Killing);
        assert_eq!(
            m.handle(Event::Timer),
            vec![E::StopDone(Err(
                "process still running after SIGTERM and SIGKILL".into()
            ))]
        );
        assert_eq!(
            quiet(m.handle(Event::Exited(Exit { code: None }))),
            vec![E::Timer(None), E::StopDone(Ok(()))]
        );
        assert_eq!(m.state, S::Stopped);
    }

    #[test]
    fn stop_in_backoff_cancels_the_restart() {
        let mut m = running();
        m.handle(Event::Exited(FAIL));
        assert_eq!(
            m.handle(Event::Stop),
            vec![E::Timer(None), E::StopDone(Ok(()))]
        );
        assert_eq!(m.state, S::Stopped);
        assert_eq!(m.handle(Event::Timer), vec![]);
    }

    #[test]
    fn exit_actions() {
        use ServiceAction as A;
        // (on-success, on-failure, exit, state after, shutdown code)
        let table = [
            (A::Ignore, A::Restart, OK, S::Stopped, None),
            (A::Restart, A::Ignore, FAIL, S::Exited, None),
            (A::Shutdown, A::Restart, OK, S::Stopped, Some(0)),
            (A::Restart, A::Shutdown, FAIL, S::Exited, Some(10)),
            (A::FailureShutdown, A::Restart, OK, S::Stopped, Some(10)),
            (A::Restart, A::SuccessShutdown, FAIL, S::Exited, Some(0)),
            (A::Restart, A::Restart, OK, S::Backoff, None),
        ];
        for (on_success, on_failure, exit, state, code) in table {
            let mut m = running();
            m.policy.on_success = on_success;
            m.policy.on_failure = on_failure;
            let out = m.handle(Event::Exited(exit));
            assert_eq!(m.state, state, "{on_success:?}/{on_failure:?}/{exit:?}");
            let got = out.iter().find_map(|e| match e {
                E::Shutdown(c) => Some(*c),
                _ => None,
            });
            assert_eq!(got, code, "{on_success:?}/{on_failure:?}/{exit:?}");
        }
    }

    #[test]
    fn check_failure_actions() {
        use ServiceAction as A;
        let fail = |action| Event::CheckFailed {
            check: "up".into(),
            action,
        };
        let mut m = running();
        let out = quiet(m.handle(fail(A::Restart)));
        assert_eq!(out[0], E::Signal(Sig::Term));
        assert_eq!(m.state, S::Terminating);
        let out = quiet(m.handle(Event::Exited(Exit { code: None })));
        assert!(out.contains(&E::BackoffTimer(Duration::from_millis(100))));
        assert_eq!(m.state, S::Backoff);
        // Already in backoff: nothing more.
        assert_eq!(m.handle(fail(A::Restart)), vec![]);

        let mut m = running();
        assert!(m.handle(fail(A::Shutdown)).contains(&E::Shutdown(11)));
        assert!(m.handle(fail(A::SuccessShutdown)).contains(&E::Shutdown(0)));
        assert_eq!(m.handle(fail(A::Ignore)), vec![]);
        assert_eq!(m.state, S::Running);
    }

    #[test]
    fn manual_start_resets_the_backoff() {
        let mut m = running();
        m.handle(Event::Exited(FAIL));
        m.handle(Event::Timer);
        m.handle(Event::Spawned);
        m.handle(Event::Exited(FAIL));
        assert_eq!(m.backoff, Duration::from_millis(200));
        assert_eq!(m.handle(Event::Start), vec![E::Timer(None), E::Spawn]);
        assert_eq!(m.backoff, Duration::ZERO);
        m.handle(Event::Spawned);
        assert_eq!(m.state, S::Starting);
    }
}
