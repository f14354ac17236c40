//! What the store holds: the desired state of each app, and what the controller recorded
//! about it (releases, units, migration).

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppRecord {
    pub name: String,
    /// The project directory the app was deployed from.
    pub project_dir: String,
    #[serde(default)]
    pub charm_dir: Option<String>,
    pub framework: String,
    /// Config values set by the user (not defaults).
    #[serde(default)]
    pub config: IndexMap<String, serde_json::Value>,
    /// Live units, by number, with the ports assigned to them.
    #[serde(default)]
    pub units: Vec<UnitRecord>,
    /// The next unit number (numbers are never reused, as in Juju).
    pub next_unit: u32,
    /// Releases in the order they were deployed; `current` indexes into the numbers.
    #[serde(default)]
    pub releases: Vec<ReleaseRecord>,
    pub current_release: u32,
    /// The generated app secret key (`<P>SECRET_KEY`).
    pub secret_key: String,
    #[serde(default)]
    pub migration: MigrationRecord,
    /// Bumped on every change of desired state, so the reconciler knows what is new.
    #[serde(default)]
    pub generation: u64,
    /// Integrations by endpoint name.
    #[serde(default)]
    pub relations: IndexMap<String, RelationRecord>,
    /// The last release and config every unit ran and passed its ready check with.
    #[serde(default)]
    pub last_good: Option<GoodState>,
    /// Why the app was rolled back, shown by `status` until the next change.
    #[serde(default)]
    pub rollback_note: Option<String>,
    /// Limits for each unit (`--constraints`, `set-constraints`).
    #[serde(default)]
    pub constraints: Constraints,
    /// The last rollback, for `twelve deploy` and the commands that wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
    /// How long a change may take to be ready everywhere before it is rolled back
    /// (`twelve deploy --timeout`), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_timeout: Option<u64>,
}

/// Juju-style constraints: limits on each unit of an app, enforced by its cgroup.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Constraints {
    /// Memory limit in bytes (`mem=512M`): over it, the kernel kills a process of the unit
    /// and its supervisor restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<u64>,
    /// CPU quota in CPUs (`cores=1.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<f64>,
}

impl Constraints {
    pub fn limits(&self) -> crate::cgroup::Limits {
        crate::cgroup::Limits {
            memory: self.mem,
            cpu_millis: self.cores.map(|c| (c * 1000.0).round() as u64),
        }
    }

    /// As Juju prints them: `mem=512M cores=1.5`; empty when there are none.
    pub fn to_juju(&self) -> String {
        let mut out = vec![];
        if let Some(m) = self.mem {
            let mib = m / (1024 * 1024);
            if m % (1 << 30) == 0 {
                out.push(format!("mem={}G", m >> 30));
            } else {
                out.push(format!("mem={mib}M"));
            }
        }
        if let Some(c) = self.cores {
            out.push(format!("cores={c}"));
        }
        out.join(" ")
    }
}

/// A change that did not become ready and was rolled back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RollbackRecord {
    /// The generation of desired state that failed.
    pub generation: u64,
    pub reason: String,
    /// The unit and service that failed, and the last lines of its log.
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub log_tail: Vec<String>,
    /// The release the app went back to.
    pub release: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GoodState {
    pub release: u32,
    pub config: IndexMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnitRecord {
    pub number: u32,
    pub app_port: u16,
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// Flask and Django: the port the unit's statsd exporter receives on (UDP and TCP).
    #[serde(default)]
    pub statsd_port: Option<u16>,
    /// Which supervisor directory runs it (see `Home::unit_dir_at`).
    #[serde(default)]
    pub incarnation: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReleaseRecord {
    pub number: u32,
    pub id: String,
    pub created: String,
    /// The copy of the project this release was deployed with (`snapshot.rs`); records
    /// from before snapshots read the app's `project_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charm: Option<String>,
    /// The snapshot's digest: a deploy of the same app files and the same project keeps
    /// the release; a changed charm makes a new one (so it can be rolled back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_digest: Option<String>,
}

/// The migration's last outcome: it runs once per key (release + the integration data that
/// triggers migrations), on one unit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MigrationRecord {
    /// The key of the last successful run.
    #[serde(default)]
    pub completed: Option<String>,
    /// The key being attempted and how it went.
    #[serde(default)]
    pub failing: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_output: String,
    /// Unix seconds before which no retry happens.
    #[serde(default)]
    pub retry_at: u64,
}

impl AppRecord {
    pub fn release_id(&self, number: u32) -> Option<&str> {
        self.releases
            .iter()
            .find(|r| r.number == number)
            .map(|r| r.id.as_str())
    }
    pub fn unit_numbers(&self) -> Vec<u32> {
        self.units.iter().map(|u| u.number).collect()
    }
    pub fn incarnation(&self, unit: u32) -> u32 {
        self.units
            .iter()
            .find(|u| u.number == unit)
            .map(|u| u.incarnation)
            .unwrap_or(0)
    }
    /// The supervisor directory of a unit's current incarnation.
    pub fn unit_dir(&self, home: &crate::home::Home, unit: u32) -> std::path::PathBuf {
        home.unit_dir_at(&self.name, unit, self.incarnation(unit))
    }
}

/// A user secret (`twelve add-secret`): its revisions, sealed, and the apps it is granted to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub created: String,
    pub revisions: Vec<SecretRevision>,
    #[serde(default)]
    pub grants: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretRevision {
    pub revision: u32,
    pub created: String,
    /// The content as JSON, sealed by the vault.
    pub sealed: String,
}

impl SecretRecord {
    pub fn latest(&self) -> Option<&SecretRevision> {
        self.revisions.iter().max_by_key(|r| r.revision)
    }
}

/// A backing service twelve runs or adopted (`twelve deploy postgresql [--external URL]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceRecord {
    pub name: String,
    pub kind: String,
    /// The `twelve_providers::Server` as JSON, sealed (an adopted server's URL carries
    /// admin credentials).
    pub server_sealed: String,
    pub created: String,
    /// Where and when its backups are made, and how the last one went (`backups.rs`).
    #[serde(default)]
    pub backups: crate::backups::BackupSettings,
}

/// One integration of an app: what endpoint, from where, and the relation data (sealed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelationRecord {
    /// The backing service it came from; `None` for data given with `--data`.
    #[serde(default)]
    pub service: Option<String>,
    pub data_sealed: String,
}
