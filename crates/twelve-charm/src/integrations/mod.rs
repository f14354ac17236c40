//! Integrations: which endpoints twelve knows, and the environment each one's relation data
//! gives the app (reference/paas-charm.md §2), for every framework including Spring Boot.

use indexmap::IndexMap;
use twelve_project::Framework;

/// What a provider handed over on one endpoint, as text keys and values
/// (`uri`, `username`, `password`, `bucket`, ...; see each kind's docs).
pub type RelationData = IndexMap<String, String>;

/// The integrations paas-charm knows (plus Kafka), detected by endpoint name and interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IntegrationKind {
    Postgresql,
    Mysql,
    Mongodb,
    Rabbitmq,
    Redis,
    S3,
    Openfga,
    Saml,
    Tracing,
    Smtp,
    Kafka,
    /// Any one endpoint with interface `oauth` (typically named `oidc`).
    Oauth,
    Valkey,
    HttpProxy,
    /// `logging` (`loki_push_api`): the units' logs are forwarded to Loki (Pebble
    /// log-targets); no environment.
    Logging,
}

impl IntegrationKind {
    /// The order paas-charm lists missing integrations in (`missing integrations: a, b`).
    pub const CHECK_ORDER: [IntegrationKind; 12] = [
        IntegrationKind::Postgresql,
        IntegrationKind::Mysql,
        IntegrationKind::Mongodb,
        IntegrationKind::Rabbitmq,
        IntegrationKind::Redis,
        IntegrationKind::S3,
        IntegrationKind::Openfga,
        IntegrationKind::Saml,
        IntegrationKind::Tracing,
        IntegrationKind::Smtp,
        IntegrationKind::Kafka,
        IntegrationKind::Oauth,
    ];

    /// Detects the kind from a `requires` entry. Endpoint names are fixed (as in paas-charm),
    /// except oauth, which any endpoint of interface `oauth` is.
    pub fn detect(endpoint: &str, interface: &str) -> Option<IntegrationKind> {
        use IntegrationKind::*;
        if interface == "oauth" {
            return Some(Oauth);
        }
        let kind = match (endpoint, interface) {
            ("postgresql", "postgresql_client") => Postgresql,
            ("mysql", "mysql_client") => Mysql,
            ("mongodb", "mongodb_client") => Mongodb,
            ("redis", "redis") => Redis,
            ("valkey", "valkey_client") => Valkey,
            ("s3", "s3") => S3,
            ("saml", "saml") => Saml,
            ("rabbitmq", "rabbitmq") => Rabbitmq,
            ("tracing", "tracing") => Tracing,
            ("smtp", "smtp") => Smtp,
            ("openfga", "openfga") => Openfga,
            ("http-proxy", "http_proxy") => HttpProxy,
            ("kafka", "kafka_client") => Kafka,
            ("logging", "loki_push_api") => Logging,
            _ => return None,
        };
        Some(kind)
    }

    /// Whether `optional: false` on this endpoint blocks the app (not valkey nor http-proxy,
    /// as in paas-charm).
    pub fn checked_when_required(self) -> bool {
        !matches!(
            self,
            IntegrationKind::Valkey | IntegrationKind::HttpProxy | IntegrationKind::Logging
        )
    }

    /// The prefix of the variables this kind's data becomes (`POSTGRESQL_DB_*` ...).
    pub fn env_prefix(self) -> &'static str {
        use IntegrationKind::*;
        match self {
            Postgresql => "POSTGRESQL_",
            Mysql => "MYSQL_",
            Mongodb => "MONGODB_",
            Rabbitmq => "RABBITMQ_",
            Redis => "REDIS_",
            S3 => "S3_",
            Openfga => "FGA_",
            Saml => "SAML_",
            Tracing => "OTEL_",
            Smtp => "SMTP_",
            Kafka => "KAFKA_",
            Oauth => "",
            Valkey => "VALKEY_",
            HttpProxy => "HTTP",
            Logging => "",
        }
    }

    /// A new or changed integration of this kind makes a pending migration run again
    /// (paas-charm's "with migrations" events).
    pub fn triggers_migration(self) -> bool {
        use IntegrationKind::*;
        matches!(
            self,
            Postgresql | Mysql | Mongodb | Redis | Valkey | S3 | Saml | Rabbitmq
        )
    }
}

/// What the env generation of one integration needs besides the data.
#[derive(Debug, Clone)]
pub struct IntegrationContext<'a> {
    pub framework: Framework,
    pub app: &'a str,
    /// The endpoint name (for oauth, the name the project gave it, e.g. `oidc`).
    pub endpoint: &'a str,
    /// The app's base URL (for OIDC redirect URIs).
    pub base_url: &'a str,
    /// Resolved config values by option name (for `<ep>-scopes`, `<ep>-redirect-path`, ...).
    pub config: &'a IndexMap<String, serde_json::Value>,
}

/// The environment an integration adds, and which of its values are secret.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntegrationEnv {
    pub env: IndexMap<String, String>,
    /// Input values that must never be shown (passwords, keys, tokens).
    pub secrets: Vec<String>,
}

/// Relation data that cannot be used, with paas-charm's two messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationDataError {
    /// `Invalid <endpoint> relation data.`
    #[error("Invalid {endpoint} relation data.")]
    Invalid { endpoint: String, reason: String },
    /// `<endpoint> relation data is either unavailable, invalid or not usable.`
    #[error("{endpoint} relation data is either unavailable, invalid or not usable.")]
    Unusable { endpoint: String, reason: String },
}

pub use env::integration_env;
pub use env::oauth_options;
pub use env::validate_data;
pub use logging::log_targets;

mod env;
mod logging;

/// The variables of an app environment whose change makes the migration run again
/// (paas-charm's "with migrations" integration events), in order.
pub fn migration_inputs(env: &IndexMap<String, String>) -> Vec<(&str, &str)> {
    use IntegrationKind::*;
    let kinds = [
        Postgresql, Mysql, Mongodb, Redis, Valkey, S3, Saml, Rabbitmq,
    ];
    debug_assert!(kinds.iter().all(|k| k.triggers_migration()));
    env.iter()
        .filter(|(k, _)| kinds.iter().any(|kind| k.starts_with(kind.env_prefix())))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}
