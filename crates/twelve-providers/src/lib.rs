//! Backing services for twelve: PostgreSQL, MySQL/MariaDB, Redis and RabbitMQ.
//!
//! A [`Server`] is either *managed* (twelve starts it from the machine's binaries, with its
//! data under a directory twelve owns) or *external* (an existing server adopted through an
//! admin URL). For each integration, [`Providers::provision`] creates a least-privilege
//! account (database + role, ACL user, vhost + user) named after the app and returns the
//! relation data twelve-charm reads (`uri`, ...). [`Providers::revoke`] removes the
//! account, keeping the data unless asked to destroy it.
//!
//! Errors are written for people: they name the server and what to do, and never contain a
//! password.

mod amqp;
mod backup;
mod backup_rabbitmq;
mod backup_redis;
mod binaries;
mod error;
mod mysql;
pub mod ports;
mod postgres;
mod rabbitmq;
mod redis;
mod util;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

pub use amqp::{amqp_login, AmqpConn, AmqpLoginError};
pub use backup::{
    version_number, DumpInfo, DumpPart, PartSink, PartSource, PartWrite, Replaced, StagedRestore,
};
pub use binaries::Binaries;
pub use error::ProviderError;
pub use util::disown_tree;

/// Relation data handed to twelve-charm for one integration (`uri`, `username`, ...).
pub type RelationData = IndexMap<String, String>;

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// The kinds of backing service twelve can provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Postgresql,
    Mysql,
    Redis,
    Rabbitmq,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Postgresql, Kind::Mysql, Kind::Redis, Kind::Rabbitmq];

    /// The name used on the command line and in relation endpoints (`postgresql`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Postgresql => "postgresql",
            Kind::Mysql => "mysql",
            Kind::Redis => "redis",
            Kind::Rabbitmq => "rabbitmq",
        }
    }

    /// The product name for messages.
    pub fn display_name(self) -> &'static str {
        match self {
            Kind::Postgresql => "PostgreSQL",
            Kind::Mysql => "MySQL",
            Kind::Redis => "Redis",
            Kind::Rabbitmq => "RabbitMQ",
        }
    }

    /// The default port of the service.
    pub fn default_port(self) -> u16 {
        match self {
            Kind::Postgresql => 5432,
            Kind::Mysql => 3306,
            Kind::Redis => 6379,
            Kind::Rabbitmq => 5672,
        }
    }

    /// The Debian package that ships the server binaries.
    pub fn debian_package(self) -> &'static str {
        match self {
            Kind::Postgresql => "postgresql",
            Kind::Mysql => "mariadb-server",
            Kind::Redis => "redis-server",
            Kind::Rabbitmq => "rabbitmq-server",
        }
    }

    /// Parse `postgresql`/`postgres`, `mysql`/`mariadb`, `redis`, `rabbitmq`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "postgresql" | "postgres" => Some(Kind::Postgresql),
            "mysql" | "mariadb" => Some(Kind::Mysql),
            "redis" => Some(Kind::Redis),
            "rabbitmq" => Some(Kind::Rabbitmq),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A backing server, as the controller stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Server {
    /// Started by twelve from the machine's binaries; data, logs and the admin secret live
    /// under `dir`; listens on 127.0.0.1:`port` only.
    Managed { kind: Kind, dir: PathBuf, port: u16 },
    /// An existing server adopted through its admin URL (which carries admin credentials),
    /// e.g. `postgresql://postgres@127.0.0.1:5432/postgres`, `mysql://root@127.0.0.1:3306/`,
    /// `redis://127.0.0.1:6379`, `amqp://guest:guest@127.0.0.1:5672/`. RabbitMQ may also
    /// have a management API URL (`http://guest:guest@host:15672`).
    External {
        kind: Kind,
        admin_url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        management_url: Option<String>,
        /// Redis: each app's user is limited to keys and channels `<app>:*` (apps that
        /// share the server cannot read each other's keys, and libraries that pick their
        /// own keys fail). Without it, each app's user has every key.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        key_prefix: bool,
    },
}

impl Server {
    pub fn managed(kind: Kind, dir: impl Into<PathBuf>, port: u16) -> Server {
        Server::Managed {
            kind,
            dir: dir.into(),
            port,
        }
    }

    pub fn external(kind: Kind, admin_url: impl Into<String>) -> Server {
        Server::External {
            kind,
            admin_url: admin_url.into(),
            management_url: None,
            key_prefix: false,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Server::Managed { kind, .. } | Server::External { kind, .. } => *kind,
        }
    }

    pub fn is_managed(&self) -> bool {
        matches!(self, Server::Managed { .. })
    }

    /// A description for messages, without any password:
    /// `PostgreSQL at 127.0.0.1:5432 (managed, data in /var/lib/twelve/pg)`.
    pub fn describe(&self) -> String {
        match self {
            Server::Managed { kind, dir, port } => format!(
                "{} at 127.0.0.1:{port} (managed, data in {})",
                kind.display_name(),
                dir.display()
            ),
            Server::External {
                kind, admin_url, ..
            } => format!(
                "{} at {} (external)",
                kind.display_name(),
                util::redact_url(admin_url)
            ),
        }
    }
}

/// What [`Providers::start_managed`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedInfo {
    /// The server's main process.
    pub pid: u32,
    /// The admin URL *without* its password (the password is in `dir/admin.secret`, 0600).
    pub admin_url: String,
}

/// The entry point: binary lookup plus the operations on servers.
#[derive(Debug, Clone, Default)]
pub struct Providers {
    binaries: Binaries,
    service_user: Option<String>,
}

impl Providers {
    /// Binaries looked up in `$PATH` plus the usual server directories
    /// (`/usr/lib/postgresql/*/bin`, `/usr/sbin`, ...).
    pub fn new() -> Providers {
        Providers::default()
    }

    /// Look binaries up with `binaries` instead (tests point it at an empty directory).
    pub fn with_binaries(binaries: Binaries) -> Providers {
        Providers {
            binaries,
            service_user: None,
        }
    }

    /// When twelve runs as root, managed servers (and a managed Redis's per-app servers)
    /// run as this user, which owns their directory (0700); without it, as `nobody`. The
    /// controller gives each managed service a system user of its own (`tw<tag>-<name>`),
    /// so that neither apps nor other services can read its data. Never root, never the
    /// machine's own `postgres`/`mysql`/`redis`/`rabbitmq` (it would share their files).
    pub fn with_service_user(mut self, user: impl Into<String>) -> Providers {
        self.service_user = Some(user.into());
        self
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// Start a managed server (idempotent: a running server just returns its info).
    pub async fn start_managed(&self, kind: Kind, dir: &Path, port: u16) -> Result<ManagedInfo> {
        match kind {
            Kind::Postgresql => postgres::start(self, dir, port).await,
            Kind::Mysql => mysql::start(self, dir, port).await,
            Kind::Redis => redis::start(self, dir, port).await,
            Kind::Rabbitmq => rabbitmq::start(self, dir, port).await,
        }
    }

    /// Stop a managed server (a stopped one is fine). External servers are left alone.
    pub async fn stop_managed(&self, server: &Server) -> Result<()> {
        let Server::Managed { kind, dir, port } = server else {
            return Ok(());
        };
        match kind {
            Kind::Postgresql => postgres::stop(self, dir, *port).await,
            Kind::Mysql => mysql::stop(dir, *port).await,
            Kind::Redis => redis::stop(dir, *port).await,
            Kind::Rabbitmq => rabbitmq::stop(dir).await,
        }
    }

    /// Whether the managed server's process is alive (external servers: whether
    /// [`Providers::check`] succeeds).
    pub async fn is_running(&self, server: &Server) -> bool {
        match server {
            Server::Managed { kind, dir, .. } => managed_pid(*kind, dir).is_some(),
            Server::External { .. } => self.check(server).await.is_ok(),
        }
    }

    /// Reach the server with admin rights.
    pub async fn check(&self, server: &Server) -> Result<()> {
        match server.kind() {
            Kind::Postgresql => postgres::check(server).await,
            Kind::Mysql => mysql::check(server).await,
            Kind::Redis => redis::check(server).await,
            Kind::Rabbitmq => rabbitmq::check(self, server).await,
        }
    }

    /// Create (or reset) the app's account and return its relation data. Idempotent: the
    /// names stay the same and the password is reset.
    pub async fn provision(&self, server: &Server, app: &str) -> Result<RelationData> {
        check_name(server, app)?;
        match server.kind() {
            Kind::Postgresql => postgres::provision(server, app).await,
            Kind::Mysql => mysql::provision(server, app).await,
            Kind::Redis => redis::provision(self, server, app).await,
            Kind::Rabbitmq => rabbitmq::provision(self, server, app).await,
        }
    }

    /// Remove the app's account (closing its sessions). Its data (database, vhost,
    /// `<app>:*` keys) is kept unless `destroy_data`. Idempotent.
    pub async fn revoke(&self, server: &Server, app: &str, destroy_data: bool) -> Result<()> {
        check_name(server, app)?;
        match server.kind() {
            Kind::Postgresql => postgres::revoke(server, app, destroy_data).await,
            Kind::Mysql => mysql::revoke(server, app, destroy_data).await,
            Kind::Redis => redis::revoke(server, app, destroy_data).await,
            Kind::Rabbitmq => rabbitmq::revoke(self, server, app, destroy_data).await,
        }
    }
}

/// Valid app names that would clash with the server's own accounts or databases.
const RESERVED: &[(Kind, &[&str])] = &[
    (
        Kind::Postgresql,
        &["postgres", "template0", "template1", "public"],
    ),
    (
        Kind::Mysql,
        &[
            "root",
            "mysql",
            "information_schema",
            "performance_schema",
            "sys",
        ],
    ),
    (Kind::Redis, &["default"]),
    (Kind::Rabbitmq, &["guest"]),
];

fn check_name(server: &Server, app: &str) -> Result<()> {
    util::validate_app(app)?;
    let kind = server.kind();
    let name = account_name(kind, app);
    let reserved = RESERVED
        .iter()
        .filter(|(k, _)| *k == kind)
        .any(|(_, names)| names.contains(&name.as_str()))
        || (kind == Kind::Postgresql && name.starts_with("pg_"));
    if reserved {
        return Err(ProviderError::Failed {
            server: server.describe(),
            action: format!("provisioning `{app}`"),
            reason: format!(
                "`{name}` is one of the server's own accounts or databases; rename the app"
            ),
        });
    }
    Ok(())
}

fn managed_pid(kind: Kind, dir: &Path) -> Option<u32> {
    match kind {
        Kind::Postgresql => postgres::running_pid(dir),
        Kind::Mysql => mysql::running_pid(dir),
        Kind::Redis => redis::running_pid(dir),
        Kind::Rabbitmq => rabbitmq::running_pid(dir),
    }
}

/// The names twelve gives the app's account on each kind of server (database/role, user,
/// vhost): PostgreSQL and MySQL use the app name with dashes turned into underscores,
/// Redis and RabbitMQ the app name itself.
pub fn account_name(kind: Kind, app: &str) -> String {
    match kind {
        Kind::Postgresql | Kind::Mysql => util::sql_name(app),
        Kind::Redis | Kind::Rabbitmq => app.to_string(),
    }
}

/// Free-function forms using [`Providers::new`].
pub async fn start_managed(kind: Kind, dir: &Path, port: u16) -> Result<ManagedInfo> {
    Providers::new().start_managed(kind, dir, port).await
}
pub async fn stop_managed(server: &Server) -> Result<()> {
    Providers::new().stop_managed(server).await
}
pub async fn is_running(server: &Server) -> bool {
    Providers::new().is_running(server).await
}
pub async fn check(server: &Server) -> Result<()> {
    Providers::new().check(server).await
}
pub async fn provision(server: &Server, app: &str) -> Result<RelationData> {
    Providers::new().provision(server, app).await
}
pub async fn revoke(server: &Server, app: &str, destroy_data: bool) -> Result<()> {
    Providers::new().revoke(server, app, destroy_data).await
}
