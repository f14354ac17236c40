//! Checks a change before it is stored: input that would block a running app is refused,
//! with the rules' own words, and nothing changes.

use indexmap::IndexMap;
use serde_json::Value;
use twelve_charm::plan_unit;
use twelve_project::Project;

use crate::api::ApiError;
use crate::controller::Controller;
use crate::model::AppRecord;

impl Controller {
    /// Refuses `config` for `app` when the rules (paas-charm's config parsing, in
    /// twelve-charm) would block the app with it for a reason they do not block it now:
    /// a value out of range, a malformed secret URI, an unknown or ungranted secret.
    pub(crate) fn refuse_blocking_config(
        &self,
        app: &AppRecord,
        project: &Project,
        config: &IndexMap<String, Value>,
    ) -> Result<(), ApiError> {
        let unit = app.units.first().map(|u| u.number).unwrap_or(0);
        let current = plan_unit(project, &self.app_state(app, unit)).status;
        // The state as the rules would see it with the new values (secrets included).
        let mut changed = app.clone();
        changed.config = config.clone();
        let proposed = plan_unit(project, &self.app_state(&changed, unit)).status;
        match crate::planner::config_refusal(&current, &proposed) {
            None => Ok(()),
            Some(why) => Err(ApiError::new(format!(
                "{} refused: {why}; nothing was changed",
                app.name
            ))
            .hint(format!(
                "fix the value and run it again; `twelve config {}` lists the options",
                app.name
            ))),
        }
    }
}

impl Controller {
    /// Records how long the app's next changes may take to go live (`deploy --timeout`).
    pub(crate) fn set_rollout_timeout(&self, app: &str, timeout: Option<u64>) {
        if let Ok(Some(rec)) = self.store.app(app) {
            if rec.rollout_timeout != timeout {
                let _ = self.store.update_app(app, move |a| {
                    a.rollout_timeout = timeout;
                    Ok(())
                });
            }
        }
    }
}
