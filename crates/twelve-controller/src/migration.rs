//! Migrations run once per change, on one unit, before any unit starts with the new
//! environment; on failure the running units keep their old plan and the run is retried
//! with a backoff.

use sha2::{Digest, Sha256};
use twelve_charm::integrations::migration_inputs;
use twelve_charm::{Migration, UnitPlan};
use twelve_pebble::client::Client as Pebble;
use twelve_pebble::types::ExecRequest;

use crate::home::Home;
use crate::model::AppRecord;
use crate::store::Store;
use crate::substrate::HostUnit;

/// Retries wait 5 s, doubling up to 5 minutes.
pub fn backoff(attempts: u32) -> u64 {
    (5u64 << attempts.saturating_sub(1).min(6)).min(300)
}

/// What a migration run is for: the release, and the environment of the integrations
/// whose change makes paas-charm migrate again (databases, redis, s3, saml, rabbitmq).
pub fn key(app: &AppRecord, plan: &UnitPlan) -> String {
    let mut h = Sha256::new();
    h.update(app.release_id(app.current_release).unwrap_or_default());
    for (k, v) in migration_inputs(&plan.environment) {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())[..16].to_string()
}

/// paas-charm's message, with twelve's retry in place of "next update-status".
pub fn failure_message(command: &[String], retry_in: u64) -> String {
    let list = command
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if retry_in > 0 {
        format!("database migration command [{list}] failed, will retry in {retry_in}s")
    } else {
        format!("database migration command [{list}] failed, will retry")
    }
}

/// Runs the migration on `unit` and records the outcome. Returns whether it succeeded.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    home: &Home,
    store: &Store,
    app: &AppRecord,
    _plan: &UnitPlan,
    host: &HostUnit,
    m: &Migration,
    key: &str,
    unit: u32,
) -> bool {
    let pebble = Pebble::for_dir(app.unit_dir(home, unit));
    let command = crate::releases::map_argv(home, app, &m.command);
    let req = ExecRequest {
        command,
        environment: host.environment.clone(),
        working_dir: Some(host.app_dir.display().to_string()),
        user: host.user.clone(),
        timeout: Some("1h".into()),
        ..Default::default()
    };
    let (ok, output) = match pebble.exec(&req).await {
        Ok(r) => (r.exit_code == 0, format!("{}{}", r.stdout, r.stderr)),
        Err(e) => (false, format!("cannot run the migration: {e}")),
    };
    let tail: String = {
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    let key = key.to_string();
    let _ = store.update_app(&app.name, move |a| {
        let rec = &mut a.migration;
        rec.last_output = tail;
        if ok {
            rec.completed = Some(key);
            rec.failing = None;
            rec.attempts = 0;
            rec.retry_at = 0;
        } else {
            if rec.failing.as_deref() != Some(key.as_str()) {
                rec.attempts = 0;
            }
            rec.failing = Some(key);
            rec.attempts += 1;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            rec.retry_at = now + backoff(rec.attempts);
        }
        Ok(())
    });
    eprintln!(
        "{} [controller] migration of {} on unit {unit}: {}",
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        app.name,
        if ok { "completed" } else { "failed" }
    );
    ok
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_to_five_minutes() {
        let got: Vec<u64> = (1..=9).map(super::backoff).collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
