//! Actions (`twelve run app/N action k=v`): the built-in `rotate-secret-key`, Django's
//! `create-superuser`, and the project's own, run with the app's environment.

use indexmap::IndexMap;
use serde_json::{json, Value};
use twelve_charm::{ActionPlan, ActionRun};
use twelve_pebble::client::Client as Pebble;
use twelve_pebble::types::ExecRequest;

use crate::api::ApiError;
use crate::controller::Controller;

type ApiResult = Result<Value, ApiError>;

/// The unit number that means "the leader" (`twelve run app/leader ...`, or a backing
/// service's only "unit": `twelve run postgresql/leader create-backup`).
pub const LEADER_UNIT: u32 = u32::MAX;

fn token_urlsafe(n: usize) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks parameters against the action's declaration and types them.
pub fn check_params(
    action: &str,
    plan: &ActionPlan,
    given: &IndexMap<String, String>,
) -> Result<IndexMap<String, Value>, ApiError> {
    let mut out = IndexMap::new();
    for (k, v) in given {
        let Some(param) = plan.params.get(k) else {
            let known: Vec<&str> = plan.params.keys().map(String::as_str).collect();
            let hint = if known.is_empty() {
                format!("{action} takes no parameters")
            } else {
                format!("{action} takes: {}", known.join(", "))
            };
            return Err(ApiError::new(format!("unknown parameter {k:?} for {action}")).hint(hint));
        };
        let ty = param.type_.as_deref().unwrap_or("string");
        let value = match ty {
            "integer" => v
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("expected an integer, got {v:?}")),
            "number" => v
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or(format!("expected a number, got {v:?}")),
            "boolean" => match v.trim() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(format!("expected true or false, got {v:?}")),
            },
            _ => Ok(Value::String(v.clone())),
        }
        .map_err(|e| ApiError::new(format!("parameter {k:?} of {action}: {e}")))?;
        if let Some(allowed) = &param.enum_ {
            if !allowed.contains(&value) {
                return Err(ApiError::new(format!(
                    "parameter {k:?} of {action} must be one of {}",
                    Value::from(allowed.clone())
                )));
            }
        }
        out.insert(k.clone(), value);
    }
    let missing: Vec<&str> = plan
        .required
        .iter()
        .filter(|r| !out.contains_key(*r))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(
            ApiError::new(format!("{action} needs {}", missing.join(", "))).hint(format!(
                "twelve run <unit> {action} {}",
                missing
                    .iter()
                    .map(|m| format!("{m}=..."))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        );
    }
    for (k, p) in &plan.params {
        if !out.contains_key(k) {
            if let Some(d) = &p.default {
                out.insert(k.clone(), d.clone());
            }
        }
    }
    Ok(out)
}

/// An action's stdout as its result: a JSON or YAML mapping when it prints one.
fn parse_result(stdout: &str) -> Value {
    let trimmed = stdout.trim();
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(trimmed) {
        return v;
    }
    if let Ok(v @ Value::Object(_)) = serde_saphyr::from_str::<Value>(trimmed) {
        return v;
    }
    json!({"output": stdout})
}

impl Controller {
    /// The kind of `name` when it is a backing service and not an app.
    fn backing_service_kind(&self, name: &str) -> Result<Option<twelve_providers::Kind>, ApiError> {
        if self.store.app(name).ok().flatten().is_some() {
            return Ok(None);
        }
        Ok(self.service_record(name)?.map(|r| {
            twelve_providers::Kind::parse(&r.kind).unwrap_or(twelve_providers::Kind::Postgresql)
        }))
    }

    pub(crate) fn list_actions(&self, name: &str) -> ApiResult {
        if let Some(kind) = self.backing_service_kind(name)? {
            return Ok(crate::backups::service_actions(kind));
        }
        let app = self.app(name)?;
        let unit = app.units.first().map(|u| u.number).unwrap_or(0);
        let (plan, _) = self.unit_plan(&app, unit).map_err(ApiError::new)?;
        Ok(serde_json::to_value(&plan.actions).unwrap_or(Value::Null))
    }

    pub(crate) async fn run_action(
        self: &std::sync::Arc<Self>,
        name: &str,
        unit: u32,
        action: &str,
        params: IndexMap<String, String>,
    ) -> ApiResult {
        if self.backing_service_kind(name)?.is_some() {
            return self.run_service_action(name, action, params).await;
        }
        let app = self.app(name)?;
        let unit = if unit == LEADER_UNIT {
            app.units.first().map(|u| u.number).unwrap_or(0)
        } else {
            unit
        };
        if !app.units.iter().any(|u| u.number == unit) {
            return Err(
                ApiError::new(format!("unit {name}/{unit} not found")).hint(format!(
                    "units: {}",
                    app.units
                        .iter()
                        .map(|u| format!("{name}/{}", u.number))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        }
        let (plan, host) = self.unit_plan(&app, unit).map_err(ApiError::new)?;
        let Some(spec) = plan.actions.get(action) else {
            let known: Vec<&str> = plan.actions.keys().map(String::as_str).collect();
            return Err(ApiError::new(format!("{name} has no action {action:?}"))
                .hint(format!("actions: {}", known.join(", "))));
        };
        let values = check_params(action, spec, &params)?;
        match &spec.run {
            ActionRun::Builtin => {
                // rotate-secret-key, as paas-charm: on the leader only.
                let leader = app.units.first().map(|u| u.number);
                if leader != Some(unit) {
                    return Err(ApiError::new("only leader unit can rotate secret key")
                        .hint(format!("run it on {name}/{}", leader.unwrap_or(0))));
                }
                let sealed = self.vault.seal(&token_urlsafe(64));
                let changed = self.update(name, move |a| {
                    a.secret_key = sealed;
                    Ok(json!({}))
                })?;
                Ok(json!({"status": "success", "generation": changed["generation"]}))
            }
            ActionRun::Missing => Err(ApiError::new(format!(
                "action {action:?} is declared but has no handler"
            ))
            .hint(format!(
                "add actions/{action} (or .sh/.py) to the app directory; see docs/actions.md"
            ))),
            ActionRun::Command { command, .. } => {
                let mut env = host.environment.clone();
                for (k, v) in &values {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    env.insert(
                        format!("ACTION_PARAM_{}", k.replace('-', "_").to_ascii_uppercase()),
                        text,
                    );
                }
                let mut password = None;
                if action == "create-superuser" && app.framework == "django" {
                    let pw = token_urlsafe(16);
                    env.insert(
                        "DJANGO_SUPERUSER_USERNAME".into(),
                        values
                            .get("username")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    );
                    env.insert(
                        "DJANGO_SUPERUSER_EMAIL".into(),
                        values
                            .get("email")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    );
                    env.insert("DJANGO_SUPERUSER_PASSWORD".into(), pw.clone());
                    password = Some(pw);
                }
                let req = ExecRequest {
                    command: crate::releases::map_argv(&self.home, &app, command),
                    environment: env,
                    working_dir: Some(host.app_dir.display().to_string()),
                    user: host.user.clone(),
                    timeout: Some("1h".into()),
                    ..Default::default()
                };
                let pebble = Pebble::for_dir(app.unit_dir(&self.home, unit));
                let out = pebble.exec(&req).await.map_err(|e| {
                    ApiError::new(format!("cannot run {action} on {name}/{unit}: {e}"))
                })?;
                if out.exit_code != 0 {
                    let mut text = format!("{}{}", out.stdout, out.stderr);
                    if let Some(pw) = &password {
                        text = text.replace(pw.as_str(), "<redacted>");
                    }
                    return Err(ApiError::new(format!(
                        "action {action} failed on {name}/{unit} (exit code {}):\n{}",
                        out.exit_code,
                        text.trim_end()
                    )));
                }
                match password {
                    Some(pw) => Ok(json!({"password": pw})),
                    None => Ok(parse_result(&out.stdout)),
                }
            }
        }
    }
}
