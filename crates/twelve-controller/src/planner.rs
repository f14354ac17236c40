//! The rollout and reconcile decisions, as pure functions over plain data: what each unit
//! runs and reports in, steps out. No processes, no clock of its own (times are given), no
//! store: `rollout.rs` gathers the view, asks, and carries the steps out.
//!
//! A change goes live only when it is ready everywhere: units that serve get a new
//! incarnation beside them (all at once, within a surge budget), traffic moves once every
//! new incarnation has passed its ready checks and stayed up for a stability window, then
//! the old ones drain. A change whose new incarnations are not stable by the deadline is
//! rolled back, without waiting on them. Units that serve nothing are changed in place.

use std::time::Duration;

use twelve_charm::{ServicesAction, State, Status};

/// How bad a state is: an app shows its worst. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    Active,
    Maintenance,
    Waiting,
    Blocked,
    Error,
}

impl Rank {
    pub fn of(state: State) -> Rank {
        match state {
            State::Active => Rank::Active,
            State::Maintenance => Rank::Maintenance,
            State::Waiting => Rank::Waiting,
            State::Blocked => Rank::Blocked,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Rank::Active => "active",
            Rank::Maintenance => "maintenance",
            Rank::Waiting => "waiting",
            Rank::Blocked => "blocked",
            Rank::Error => "error",
        }
    }
}

/// What a unit's supervisor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Every enabled service runs and every ready check passes.
    Ready,
    /// Coming up: a service between stop and start, or a ready check not passing yet.
    Starting(String),
    /// A service exited and is being restarted (Pebble's backoff).
    Restarting(String),
    /// A service is stopped or failed, or the supervisor does not answer.
    Down(String),
}

impl Health {
    pub fn reason(&self) -> &str {
        match self {
            Health::Ready => "ready",
            Health::Starting(m) | Health::Restarting(m) | Health::Down(m) => m,
        }
    }
}

/// A unit as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitView {
    pub number: u32,
    /// Its supervisor does not run the desired layer (a new plan, or a new supervisor).
    pub stale: bool,
    /// Only where the logs go differs from what it runs.
    pub only_log_targets: bool,
    /// In rotation at the ingress.
    pub serving: bool,
    pub health: Health,
}

/// The migration of the desired plan, once the controller ran it if it was due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    /// None declared, or it already completed for this key.
    Done,
    /// It failed (now or before, retry not due yet).
    Failed {
        /// The migration is the new release's (not one re-run by an integration change).
        new_release: bool,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppView {
    /// What the desired plan's status means for the services.
    pub services: ServicesAction,
    pub units: Vec<UnitView>,
    pub migration: Migration,
    /// The last good release and config differ from the desired ones.
    pub can_roll_back: bool,
    /// How many new incarnations may run beside the old ones at once (free memory).
    pub surge_budget: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Change nothing that runs: the app is blocked on its desired state, or a failed
    /// migration waits for its retry; the units keep serving what they run.
    Hold,
    /// Go back to the last good release and config.
    RollBack { reason: String },
    /// Send the new log targets to these units' supervisors (nothing restarts).
    LogTargets(Vec<u32>),
    /// Take these units out of rotation and stop their services.
    Stop(Vec<u32>),
    /// Push the plan in place and restart: these units serve nothing.
    Restart(Vec<u32>),
    /// Start new incarnations of these serving units beside them.
    Surge(Vec<u32>),
}

/// The steps that bring the app to its desired plan.
pub fn plan_app(v: &AppView) -> Vec<Step> {
    if let Migration::Failed {
        new_release,
        message,
    } = &v.migration
    {
        if *new_release && v.can_roll_back {
            return vec![Step::RollBack {
                reason: message.clone(),
            }];
        }
        return vec![Step::Hold];
    }
    let stale: Vec<&UnitView> = v.units.iter().filter(|u| u.stale).collect();
    match v.services {
        ServicesAction::Hold => return vec![Step::Hold],
        ServicesAction::Stop => {
            let units: Vec<u32> = stale.iter().map(|u| u.number).collect();
            return if units.is_empty() {
                vec![]
            } else {
                vec![Step::Stop(units)]
            };
        }
        ServicesAction::Run => {}
    }
    let mut steps = vec![];
    let logs: Vec<u32> = stale
        .iter()
        .filter(|u| u.only_log_targets)
        .map(|u| u.number)
        .collect();
    let serves = |u: &UnitView| u.serving && u.health == Health::Ready;
    let restart: Vec<u32> = stale
        .iter()
        .filter(|u| !u.only_log_targets && !serves(u))
        .map(|u| u.number)
        .collect();
    // A new incarnation has new ports, which are in every other unit's environment
    // (`<P>PEER_FQDNS`): when one serving unit needs one, every serving unit gets one in
    // the same surge, so that they all agree once it is live (and units changed in place
    // meanwhile are given the new ports too).
    let surge: Vec<u32> = if stale.iter().any(|u| !u.only_log_targets && serves(u)) {
        v.units
            .iter()
            .filter(|u| serves(u))
            .map(|u| u.number)
            .take(v.surge_budget.max(1))
            .collect()
    } else {
        vec![]
    };
    let logs: Vec<u32> = logs.into_iter().filter(|n| !surge.contains(n)).collect();
    if !logs.is_empty() {
        steps.push(Step::LogTargets(logs));
    }
    if !restart.is_empty() {
        steps.push(Step::Restart(restart));
    }
    if !surge.is_empty() {
        steps.push(Step::Surge(surge));
    }
    steps
}

/// How long a unit has been ready without a change of its processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stability {
    since_ms: Option<u64>,
    fingerprint: Vec<(String, i64)>,
}

impl Stability {
    /// Records one look at the unit: its health and its services' pids at `now_ms`.
    pub fn observe(&mut self, now_ms: u64, health: &Health, fingerprint: Vec<(String, i64)>) {
        if *health != Health::Ready {
            self.since_ms = None;
            return;
        }
        if self.since_ms.is_none() || self.fingerprint != fingerprint {
            self.since_ms = Some(now_ms);
            self.fingerprint = fingerprint;
        }
    }
    pub fn ready_for(&self, now_ms: u64) -> Option<Duration> {
        self.since_ms
            .map(|s| Duration::from_millis(now_ms.saturating_sub(s)))
    }
}

/// A new incarnation being started beside a serving unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncarnation {
    pub unit: u32,
    pub health: Health,
    /// How long it has been ready without its processes changing.
    pub ready_for: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SurgeDecision {
    /// Not every new incarnation is stable yet, and there is time.
    Wait,
    /// Every new incarnation is ready and stable: switch traffic, drain the old ones.
    Commit,
    /// The deadline passed: stop the new incarnations (without waiting on them) and go
    /// back to the last good state. Names the first unit that was not ready and why.
    RollBack { unit: u32, reason: String },
}

pub fn judge_surge(
    new: &[NewIncarnation],
    elapsed: Duration,
    deadline: Duration,
    stability: Duration,
) -> SurgeDecision {
    let unstable = new
        .iter()
        .find(|n| n.ready_for.is_none_or(|r| r < stability));
    match unstable {
        None => SurgeDecision::Commit,
        Some(n) if elapsed >= deadline => SurgeDecision::RollBack {
            unit: n.unit,
            reason: match &n.health {
                Health::Ready => "ready, but not stable (its processes kept changing)".into(),
                h => h.reason().to_string(),
            },
        },
        Some(_) => SurgeDecision::Wait,
    }
}

/// A unit's status: its plan's status, and what its supervisor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    pub rank: Rank,
    pub message: String,
    /// It may take traffic: it runs a plan (the desired one, or the one it keeps while
    /// the app is blocked) and is ready.
    pub serving: bool,
}

/// `held`: the unit keeps what it runs (a `Hold` plan, or a migration that failed).
pub fn unit_state(plan: &Status, health: &Health, held: Option<&str>) -> UnitState {
    let (rank, message) = match health {
        Health::Ready => (Rank::Active, String::new()),
        Health::Starting(m) | Health::Restarting(m) => (Rank::Maintenance, m.clone()),
        Health::Down(m) => (Rank::Error, m.clone()),
    };
    if let Some(why) = held {
        return UnitState {
            rank: rank.max(Rank::Blocked),
            message: why.to_string(),
            serving: *health == Health::Ready,
        };
    }
    match (plan.state, plan.services) {
        (State::Active, _) => UnitState {
            rank,
            message,
            serving: *health == Health::Ready,
        },
        (state, ServicesAction::Hold) => UnitState {
            rank: Rank::of(state).max(rank),
            message: plan.message.clone(),
            serving: *health == Health::Ready,
        },
        (state, _) => UnitState {
            rank: Rank::of(state),
            message: plan.message.clone(),
            serving: false,
        },
    }
}

/// A config change is refused when its plan is blocked for a reason the current plan is
/// not: it would block the app (paas-charm's `invalid options: ...`, an unknown or
/// ungranted secret). Returns the reason.
pub fn config_refusal(current: &Status, proposed: &Status) -> Option<String> {
    (proposed.state == State::Blocked && proposed.message != current.message)
        .then(|| proposed.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(n: u32, stale: bool, serving: bool, health: Health) -> UnitView {
        UnitView {
            number: n,
            stale,
            only_log_targets: false,
            serving,
            health,
        }
    }

    fn app(units: Vec<UnitView>) -> AppView {
        AppView {
            services: ServicesAction::Run,
            units,
            migration: Migration::Done,
            can_roll_back: true,
            surge_budget: 10,
        }
    }

    fn three_serving(stale: bool) -> Vec<UnitView> {
        (0..3)
            .map(|n| unit(n, stale, true, Health::Ready))
            .collect()
    }

    const S: Duration = Duration::from_millis(1500);
    const DEADLINE: Duration = Duration::from_secs(120);

    fn inc(unit: u32, health: Health, ready_for: Option<u64>) -> NewIncarnation {
        NewIncarnation {
            unit,
            health,
            ready_for: ready_for.map(Duration::from_millis),
        }
    }

    #[test]
    fn a_new_release_or_config_surges_every_serving_unit_at_once() {
        assert_eq!(
            plan_app(&app(three_serving(true))),
            [Step::Surge(vec![0, 1, 2])]
        );
        // Nothing changed: nothing to do.
        assert_eq!(plan_app(&app(three_serving(false))), []);
    }

    #[test]
    fn the_surge_is_bounded_by_the_budget_but_never_zero() {
        let mut v = app(three_serving(true));
        v.surge_budget = 2;
        assert_eq!(plan_app(&v), [Step::Surge(vec![0, 1])]);
        v.surge_budget = 0;
        assert_eq!(plan_app(&v), [Step::Surge(vec![0])]);
    }

    #[test]
    fn when_one_serving_unit_changes_every_serving_unit_surges_with_it() {
        // Scaling from 1 to 3 changes the peers of unit 0: the new units start in place,
        // and unit 0 gets a new incarnation (new ports the new units are given too).
        let v = app(vec![
            unit(0, true, true, Health::Ready),
            unit(1, false, true, Health::Ready),
            unit(2, true, false, Health::Starting("starting".into())),
        ]);
        assert_eq!(
            plan_app(&v),
            [Step::Restart(vec![2]), Step::Surge(vec![0, 1])]
        );
    }

    #[test]
    fn units_that_serve_nothing_change_in_place() {
        // A first deploy, a scale-up, a killed unit whose supervisor came back empty.
        let v = app(vec![
            unit(0, true, true, Health::Ready),
            unit(1, true, false, Health::Starting("starting".into())),
            unit(
                2,
                true,
                false,
                Health::Down("supervisor not answering".into()),
            ),
        ]);
        assert_eq!(
            plan_app(&v),
            [Step::Restart(vec![1, 2]), Step::Surge(vec![0])]
        );
    }

    #[test]
    fn a_killed_unit_is_restarted_in_place_while_the_others_serve() {
        let mut units = three_serving(false);
        units[1] = unit(
            1,
            true,
            false,
            Health::Down("supervisor not answering".into()),
        );
        assert_eq!(plan_app(&app(units)), [Step::Restart(vec![1])]);
    }

    #[test]
    fn a_change_of_log_targets_alone_is_pushed_live() {
        let mut units = three_serving(true);
        for u in &mut units {
            u.only_log_targets = true;
        }
        assert_eq!(plan_app(&app(units)), [Step::LogTargets(vec![0, 1, 2])]);
    }

    #[test]
    fn invalid_config_or_a_revoked_secret_holds_what_runs() {
        // paas-charm's config errors do not replan: the plan says Hold.
        let mut v = app(three_serving(true));
        v.services = ServicesAction::Hold;
        assert_eq!(plan_app(&v), [Step::Hold]);
    }

    #[test]
    fn missing_required_state_stops_the_changed_units() {
        let mut v = app(three_serving(true));
        v.services = ServicesAction::Stop;
        assert_eq!(plan_app(&v), [Step::Stop(vec![0, 1, 2])]);
    }

    #[test]
    fn a_failed_migration_of_a_new_release_rolls_back_before_any_unit_changes() {
        let mut v = app(three_serving(true));
        v.migration = Migration::Failed {
            new_release: true,
            message: "migration exited 1".into(),
        };
        assert_eq!(
            plan_app(&v),
            [Step::RollBack {
                reason: "migration exited 1".into()
            }]
        );
        // Re-run by an integration change: held and retried, the units keep serving.
        v.migration = Migration::Failed {
            new_release: false,
            message: "failed".into(),
        };
        assert_eq!(plan_app(&v), [Step::Hold]);
        // Nothing to go back to (the first release): held.
        v.can_roll_back = false;
        v.migration = Migration::Failed {
            new_release: true,
            message: "failed".into(),
        };
        assert_eq!(plan_app(&v), [Step::Hold]);
    }

    #[test]
    fn a_controller_restart_mid_rollout_starts_the_surge_again() {
        // The half-started incarnations were not committed: the store still names the old
        // ones, which serve and do not run the desired plan.
        assert_eq!(
            plan_app(&app(three_serving(true))),
            [Step::Surge(vec![0, 1, 2])]
        );
    }

    #[test]
    fn traffic_moves_only_when_every_new_incarnation_is_stable() {
        let all_stable = [
            inc(0, Health::Ready, Some(1500)),
            inc(1, Health::Ready, Some(2000)),
        ];
        assert_eq!(
            judge_surge(&all_stable, Duration::from_secs(3), DEADLINE, S),
            SurgeDecision::Commit
        );
        let one_young = [
            inc(0, Health::Ready, Some(1500)),
            inc(1, Health::Ready, Some(200)),
        ];
        assert_eq!(
            judge_surge(&one_young, Duration::from_secs(3), DEADLINE, S),
            SurgeDecision::Wait
        );
    }

    /// Each kind of broken release, as its new incarnations report it at the deadline.
    #[test]
    fn every_broken_release_is_rolled_back_at_the_deadline_naming_why() {
        let cases = [
            // An import error: gunicorn exits at once, Pebble restarts it.
            (
                Health::Restarting("service flask is restarting (backoff)".into()),
                "service flask is restarting (backoff)",
            ),
            // Crashes 2 s after start: it was ready, then its processes changed.
            (
                Health::Restarting("service flask is restarting (backoff)".into()),
                "backoff",
            ),
            // Never opens its port; a ready check answering 500.
            (
                Health::Starting("waiting for the app to be ready".into()),
                "waiting for the app to be ready",
            ),
            (Health::Down("service flask is error".into()), "error"),
        ];
        for (health, why) in cases {
            let new = [inc(0, Health::Ready, Some(5000)), inc(1, health, None)];
            assert_eq!(
                judge_surge(&new, Duration::from_secs(10), Duration::from_secs(30), S),
                SurgeDecision::Wait
            );
            match judge_surge(&new, DEADLINE, DEADLINE, S) {
                SurgeDecision::RollBack { unit, reason } => {
                    assert_eq!(unit, 1);
                    assert!(reason.contains(why), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_crash_after_start_restarts_the_stability_window() {
        let mut s = Stability::default();
        let pids = |p| vec![("flask".to_string(), p)];
        s.observe(0, &Health::Starting("x".into()), pids(1));
        assert_eq!(s.ready_for(0), None);
        s.observe(1000, &Health::Ready, pids(1));
        assert_eq!(s.ready_for(2000), Some(Duration::from_millis(1000)));
        // Gunicorn exited at 2 s and Pebble restarted it: a new pid.
        s.observe(2100, &Health::Ready, pids(2));
        assert_eq!(s.ready_for(2200), Some(Duration::from_millis(100)));
        s.observe(2300, &Health::Restarting("backoff".into()), pids(2));
        assert_eq!(s.ready_for(5000), None);
    }

    #[test]
    fn a_blocked_unit_that_keeps_its_plan_keeps_serving() {
        let blocked_hold =
            Status::blocked("invalid options: webserver-workers", ServicesAction::Hold);
        let st = unit_state(&blocked_hold, &Health::Ready, None);
        assert_eq!(
            st,
            UnitState {
                rank: Rank::Blocked,
                message: "invalid options: webserver-workers".into(),
                serving: true
            }
        );
        // A failed migration of an integration change: held, serving.
        let st = unit_state(
            &Status::active(),
            &Health::Ready,
            Some("waiting for the migration"),
        );
        assert!(st.serving && st.rank == Rank::Blocked);
        // Stopped for a missing integration: out of rotation.
        let stop = Status::blocked("missing integrations: postgresql", ServicesAction::Stop);
        assert!(!unit_state(&stop, &Health::Ready, None).serving);
        // Not ready: out of rotation, whatever the plan.
        let st = unit_state(
            &Status::active(),
            &Health::Restarting("backoff".into()),
            None,
        );
        assert_eq!((st.rank, st.serving), (Rank::Maintenance, false));
    }

    #[test]
    fn ranks_order_from_active_to_error() {
        assert!(Rank::Active < Rank::Maintenance);
        assert!(Rank::Maintenance < Rank::Waiting);
        assert!(Rank::Waiting < Rank::Blocked);
        assert!(Rank::Blocked < Rank::Error);
    }

    #[test]
    fn config_that_would_block_the_app_is_refused() {
        let active = Status::active();
        let invalid = Status::blocked("invalid options: webserver-workers", ServicesAction::Hold);
        assert_eq!(
            config_refusal(&active, &invalid).as_deref(),
            Some("invalid options: webserver-workers")
        );
        let secret = Status::blocked(
            "secret doesnotexist (option api-token) does not exist or is not granted to web",
            ServicesAction::Hold,
        );
        assert!(config_refusal(&active, &secret).is_some());
        // Already blocked for something else that the change does not touch: allowed.
        let missing = Status::blocked("missing integrations: postgresql", ServicesAction::Stop);
        assert_eq!(config_refusal(&missing, &missing), None);
        assert_eq!(config_refusal(&active, &active), None);
        // A change that fixes a blocked app is allowed.
        assert_eq!(config_refusal(&invalid, &active), None);
    }
}
