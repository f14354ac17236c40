//! Statuses, in paas-charm's words, and what each means for the app's services.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Active,
    Blocked,
    Waiting,
    Maintenance,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Blocked => "blocked",
            State::Waiting => "waiting",
            State::Maintenance => "maintenance",
        }
    }
}

/// What a status means for the services of the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServicesAction {
    /// Run the plan.
    Run,
    /// Stop every service: the app waits for required configuration or integrations.
    Stop,
    /// Leave whatever runs as it is (the new plan is not applied), as paas-charm does when
    /// it blocks on a bad value: a running app keeps its last good plan.
    Hold,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    pub message: String,
    pub services: ServicesAction,
}

impl Status {
    pub fn active() -> Status {
        Status {
            state: State::Active,
            message: String::new(),
            services: ServicesAction::Run,
        }
    }
    pub fn blocked(message: impl Into<String>, services: ServicesAction) -> Status {
        Status {
            state: State::Blocked,
            message: message.into(),
            services,
        }
    }
    pub fn waiting(message: impl Into<String>) -> Status {
        Status {
            state: State::Waiting,
            message: message.into(),
            services: ServicesAction::Stop,
        }
    }

    /// `missing options: a, b` and/or `invalid options: c`, joined by `, `.
    ///
    /// paas-charm builds this with a backslash continuation inside an f-string, which puts
    /// eight spaces before the comma (and at the end when only options are missing); twelve
    /// writes the message without them.
    pub fn config_message(missing: &[String], invalid: &[String]) -> Option<String> {
        let mut parts = vec![];
        if !missing.is_empty() {
            parts.push(format!("missing options: {}", missing.join(", ")));
        }
        if !invalid.is_empty() {
            parts.push(format!("invalid options: {}", invalid.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}
