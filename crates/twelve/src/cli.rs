//! Every verb of the CLI is defined here, in one place; `--help` and docs/cli.md derive
//! from these definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "twelve",
    version,
    about = "Deploy and operate 12-factor web apps (Flask, Django, FastAPI, Go, Express, Spring Boot)",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `twelve pebble ...` alone, parsed the same way as through [`Cli`].
#[derive(Debug, Parser)]
#[command(name = "twelve", version, propagate_version = true)]
pub struct PebbleCli {
    #[command(subcommand)]
    pub command: PebbleOnly,
}

#[derive(Debug, Subcommand)]
pub enum PebbleOnly {
    /// The Pebble-compatible unit supervisor and its client commands.
    Pebble(twelve_pebble::cli::PebbleArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    #[value(name = "flask-framework")]
    Flask,
    #[value(name = "django-framework")]
    Django,
    #[value(name = "fastapi-framework")]
    FastApi,
    #[value(name = "go-framework")]
    Go,
    #[value(name = "expressjs-framework")]
    ExpressJs,
    #[value(name = "spring-boot-framework")]
    SpringBoot,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Flask => "flask-framework",
            Profile::Django => "django-framework",
            Profile::FastApi => "fastapi-framework",
            Profile::Go => "go-framework",
            Profile::ExpressJs => "expressjs-framework",
            Profile::SpringBoot => "spring-boot-framework",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a runnable project for a framework: rockcraft.yaml, charm/charmcraft.yaml,
    /// the dependency file and a hello-world app.
    Init {
        /// The framework profile.
        #[arg(long, value_enum)]
        profile: Profile,
        /// The project (and app) name; default: the directory's name.
        #[arg(long)]
        name: Option<String>,
        /// Where to create the project (created if missing); default: the current directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Show the plan a unit of the app would run: services, commands, environment, checks,
    /// migration, actions, and why the status is what it is. Pure: no controller, network
    /// or processes.
    Render {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// A scenario file: app name, units, config, secrets, integration data (docs/render.md).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// The unit to plan (default: the scenario's `unit`, else 0).
        #[arg(long)]
        unit: Option<u32>,
        /// Output format.
        #[arg(long, value_enum, default_value = "yaml")]
        format: Format,
        /// Show secret values (passwords, keys, secret contents) instead of a marker.
        #[arg(long)]
        reveal: bool,
        /// The directory holding charmcraft.yaml (default: DIR/charm, else DIR).
        #[arg(long)]
        charm_dir: Option<PathBuf>,
        /// Which paas-charm's port rules to follow, `1.12` or `main` (default: main when
        /// paas-config.yaml sets port, metrics-port or metrics-path, else 1.12).
        #[arg(long, value_name = "LINE")]
        paas_charm: Option<twelve_project::PaasCharmLine>,
    },
    /// Kubernetes: render the app as Kubernetes objects, or apply them (server-side apply)
    /// to a cluster (docs/k8s.md).
    K8s {
        #[command(subcommand)]
        command: K8sCommand,
    },
    /// The Pebble-compatible unit supervisor and its client commands.
    Pebble(twelve_pebble::cli::PebbleArgs),
    /// The ingress (reverse proxy) and its admin commands; the controller runs it.
    Ingress(twelve_ingress::IngressArgs),
    /// The statsd exporter a Flask or Django unit runs beside gunicorn (its plan starts it):
    /// statsd over UDP/TCP in, Prometheus metrics out.
    StatsdExporter(twelve_statsd::StatsdArgs),
    #[command(flatten)]
    App(AppCommand),
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Print the app's Kubernetes objects as multi-document YAML (StatefulSet, Services,
    /// ConfigMap, Secret, migration Job, scheduler Deployment, Ingress). Pure: no cluster.
    Render {
        #[command(flatten)]
        app: K8sAppArgs,
        /// Show secret values (base64 in the Secret) instead of a marker.
        #[arg(long)]
        reveal: bool,
    },
    /// Apply the app's objects to a cluster with server-side apply; the migration Job must
    /// succeed before the StatefulSet and Deployments are applied.
    Apply {
        #[command(flatten)]
        app: K8sAppArgs,
        /// The API server (https://HOST:6443, or http://127.0.0.1:8001 for `kubectl proxy`);
        /// default: the kubeconfig's.
        #[arg(long)]
        server: Option<String>,
        /// A file holding a bearer token (e.g. from `kubectl create token`).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A kubeconfig: server, CA certificate and token or client certificate of its
        /// current context (default: $KUBECONFIG, else ~/.kube/config, unless --server).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context (default: its current-context).
        #[arg(long)]
        context: Option<String>,
        /// Do not verify the API server's certificate.
        #[arg(long)]
        insecure_skip_tls_verify: bool,
        /// Let the API server validate every object without storing anything.
        #[arg(long)]
        dry_run: bool,
        /// How long the migration Job may run (e.g. 10m, 90s).
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        migration_timeout: String,
        /// Take over fields another field manager (`kubectl scale`, `kubectl edit`, an
        /// autoscaler) set, instead of stopping at the conflict.
        #[arg(long)]
        force_conflicts: bool,
    },
}

/// What `k8s render` and `k8s apply` render.
#[derive(Debug, clap::Args)]
pub struct K8sAppArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// A scenario file (config, secrets, integration data), as for `twelve render`.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// The namespace (default: the kubeconfig's, else the scenario's model, `default`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The app's OCI image (its rock, pushed to a registry); default `<app>:latest`.
    #[arg(long)]
    pub image: Option<String>,
    /// Replicas of the web StatefulSet (default: the scenario's units, else 1).
    #[arg(short = 'n', long = "num-units")]
    pub units: Option<u32>,
    /// Serve the app at `<app>.<DOMAIN>` through an Ingress (none without it).
    #[arg(long)]
    pub domain: Option<String>,
    /// The Ingress's ingressClassName.
    #[arg(long)]
    pub ingress_class: Option<String>,
    /// The directory holding charmcraft.yaml (default: DIR/charm, else DIR).
    #[arg(long)]
    pub charm_dir: Option<PathBuf>,
    /// Take the project, config, secrets, integration data, secret key and units of an app
    /// deployed on this machine (instead of DIR and a scenario).
    #[arg(long, value_name = "APP", conflicts_with_all = ["scenario", "charm_dir"])]
    pub from_app: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

/// The verbs that talk to the controller (Juju's words, with short aliases).
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Build an immutable release of the project (virtualenv, npm ci, go build, jar).
    Pack {
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long)]
        charm_dir: Option<PathBuf>,
        /// Build an OCI image archive instead (base layer from mmdebstrap, the app's
        /// layer, twelve pebble as the entrypoint; docs/k8s.md). Flask, Django, FastAPI.
        #[arg(long)]
        oci: bool,
        /// With --oci: the archive to write (default `<name>.oci.tar`).
        #[arg(short = 'o', long, value_name = "FILE", requires = "oci")]
        output: Option<PathBuf>,
        /// With --oci: the image's NAME:TAG (default `<name>:latest`).
        #[arg(long, value_name = "NAME:TAG", requires = "oci")]
        tag: Option<String>,
        /// With --oci: push the image to a registry (`HOST:PORT/NAME:TAG`) with skopeo.
        #[arg(long, value_name = "REGISTRY/NAME:TAG", requires = "oci")]
        push: Option<String>,
    },
    /// Deploy a project (packing it when needed), a new release of a deployed app, or a
    /// backing service (`postgresql`, `mysql`, `redis`, `rabbitmq`).
    Deploy {
        /// The project directory, or a backing service kind.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The app name (default: the project's name).
        app: Option<String>,
        /// How many units to run.
        #[arg(long, short = 'n')]
        num_units: Option<u32>,
        /// Config values, `key=value`.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Roll back to an earlier release (see `twelve releases APP`).
        #[arg(long)]
        release: Option<u32>,
        /// Return once the controller has the new desired state, without waiting.
        #[arg(long)]
        no_wait: bool,
        /// How long the new release or config may take to be ready on every unit before
        /// it is rolled back (e.g. 90s, 5m; default 120s).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
        /// Backing services: adopt an existing server given its admin URL instead of
        /// starting one (e.g. postgresql://postgres@127.0.0.1:5432/postgres).
        #[arg(long, value_name = "ADMIN_URL")]
        external: Option<String>,
        /// RabbitMQ: the management API URL of an adopted broker.
        #[arg(long, value_name = "URL")]
        management: Option<String>,
        /// An adopted Redis: limit each app's user to keys and channels `<app>:*` (by
        /// default each app's user has every key, as under paas-charm).
        #[arg(long)]
        key_prefix: bool,
        #[arg(long)]
        charm_dir: Option<PathBuf>,
        /// Limits for each unit, Juju-style: "mem=512M cores=1.5" (see set-constraints).
        #[arg(long, value_name = "CONSTRAINTS")]
        constraints: Option<String>,
    },
    /// Set an app's constraints: `mem=1G` (memory per unit; K, M, G, T; MiB when bare),
    /// `cores=1.5` (CPU quota per unit). The whole set is replaced, as in Juju: a key not
    /// given has no limit. Running units get them at
    /// once, without a restart; a unit over its memory limit loses a process, which its
    /// supervisor restarts.
    SetConstraints {
        app: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        constraints: Vec<String>,
    },
    /// Apps, units, addresses and statuses.
    Status {
        app: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
        /// Refresh every DURATION (e.g. 2s) until interrupted.
        #[arg(long, value_name = "DURATION")]
        watch: Option<String>,
    },
    /// Show an app's config, or set `key=value` values, or `--reset` keys.
    Config {
        app: String,
        #[arg(value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Options to reset to their defaults (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        reset: Vec<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
        /// Return once the controller has the change, without waiting for it to go live.
        #[arg(long)]
        no_wait: bool,
    },
    /// Set the number of units of an app.
    #[command(name = "scale-application", visible_alias = "scale")]
    ScaleApplication {
        app: String,
        units: u32,
        /// Return once the controller has the change, without waiting for it to go live.
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove one unit (`app/N`).
    RemoveUnit {
        unit: String,
        /// Return once the controller has the change, without waiting for it to go live.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a unit's service logs (Pebble's format).
    Logs {
        /// `app/N` for one unit, or `app` for every unit, merged in time order.
        unit: String,
        /// Services to show (default: all).
        services: Vec<String>,
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many lines (per unit, then merged); -1 for all that are kept.
        #[arg(short = 'n', default_value = "30", allow_hyphen_values = true)]
        n: i64,
        /// Every unit of the app (the default when no unit number is given).
        #[arg(long)]
        all_units: bool,
        /// Only lines newer than this (e.g. 10m, 30s, 1h).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only lines matching this regular expression.
        #[arg(long, value_name = "REGEX")]
        grep: Option<String>,
        /// Forward the app's logs from now on to Loki (`loki=http://HOST:3100/loki/api/v1/push`,
        /// several URLs comma-separated): the `logging` integration, as
        /// `twelve integrate APP logging --data url=...`. Stop with
        /// `twelve remove-relation APP logging`.
        #[arg(long, value_name = "loki=URL", conflicts_with_all = ["follow", "since", "grep", "services"])]
        forward: Option<String>,
    },
    /// Run a command in a unit with the app's environment, user and directory.
    Exec {
        /// `app/N`
        unit: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove an app and its units.
    #[command(name = "remove-application", visible_alias = "remove-app")]
    RemoveApplication {
        app: String,
        /// Backing services: also delete the managed server's data.
        #[arg(long)]
        destroy_data: bool,
    },
    /// Integrate an app with a backing service (`twelve integrate web postgresql`), or give
    /// an endpoint's data (`twelve integrate web s3 --data bucket=b ...`).
    #[command(visible_alias = "relate")]
    Integrate {
        app: String,
        /// A deployed backing service, or an endpoint of the app.
        target: String,
        /// Endpoint data, `key=value` (see docs/integrations.md).
        #[arg(long = "data", value_name = "KEY=VALUE", num_args = 1..)]
        data: Vec<String>,
        /// Endpoint data from a YAML mapping file.
        #[arg(long)]
        data_file: Option<PathBuf>,
        /// Return once the controller has the change, without waiting for it to go live.
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove an integration; a provisioned account is dropped (data kept unless
    /// --destroy-data).
    RemoveRelation {
        app: String,
        target: String,
        #[arg(long)]
        destroy_data: bool,
        /// Return once the controller has the change, without waiting for it to go live.
        #[arg(long)]
        no_wait: bool,
    },
    /// An app's releases.
    Releases { app: String },
    /// Store a secret (encrypted at rest); prints its `secret:<id>` URI.
    AddSecret {
        name: String,
        /// `key=value` pairs.
        #[arg(value_name = "KEY=VALUE")]
        content: Vec<String>,
        /// `key=path`: the value is read from a file.
        #[arg(long = "file", value_name = "KEY=PATH")]
        files: Vec<String>,
        /// A description.
        #[arg(long)]
        info: Option<String>,
    },
    /// Add a new revision of a secret; granted apps roll to it.
    UpdateSecret {
        secret: String,
        #[arg(value_name = "KEY=VALUE")]
        content: Vec<String>,
        #[arg(long = "file", value_name = "KEY=PATH")]
        files: Vec<String>,
        #[arg(long)]
        info: Option<String>,
        /// Return once the controller has the change, without waiting for it to go live.
        #[arg(long)]
        no_wait: bool,
    },
    /// List secrets: names, ids, revisions and grants (never values).
    Secrets {
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
    },
    /// Show a secret; values only with --reveal.
    ShowSecret {
        secret: String,
        #[arg(long)]
        reveal: bool,
        #[arg(long)]
        revision: Option<u32>,
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
    },
    /// Let an app read a secret.
    GrantSecret { secret: String, app: String },
    /// Stop an app from reading a secret.
    RevokeSecret { secret: String, app: String },
    /// Delete a secret and all its revisions.
    RemoveSecret { secret: String },
    /// The actions an app declares (or a backing service has), with their parameters.
    Actions { app: String },
    /// Run an action on a unit: `twelve run web/0 rotate-secret-key`, or on a backing
    /// service: `twelve run postgresql/leader create-backup` (docs/backups.md).
    Run {
        /// `app/N`, `app/leader`, `app` (its leader), or a backing service (`postgresql`)
        unit: String,
        action: String,
        #[arg(value_name = "KEY=VALUE")]
        params: Vec<String>,
        #[arg(long, value_enum, default_value = "yaml")]
        format: crate::cli::Format,
        /// Return once the controller has the change, without waiting for it to go live.
        #[arg(long)]
        no_wait: bool,
    },
    /// Prometheus service discovery: `sd` prints the http_sd JSON, `prometheus-config` a
    /// ready scrape_configs block.
    Metrics {
        #[command(subcommand)]
        command: MetricsCommand,
    },
    /// Print the URL of the live dashboard (apps, units, statuses, logs).
    ///
    /// The dashboard answers only requests for localhost, 127.0.0.1 or [::1]; with
    /// --token, the URL carries a token that opens it under any other name too (through a
    /// tunnel or a proxy). Keep that URL to yourself.
    Dashboard {
        /// Print a URL with the access token (from TWELVE_HOME/web-token).
        #[arg(long)]
        token: bool,
    },
    /// The controller daemon.
    Controller {
        #[command(subcommand)]
        command: ControllerCommand,
    },
    /// An app's domains: requests for them go to the app, and its base URL follows the
    /// first one (docs/domains.md).
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
    /// HTTPS certificates (docs/tls.md).
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Maintenance mode: the ingress answers 503 with a small page; units keep running.
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Route HOST (`shop.example.com`, or `*.example.com` with a certificate you bring) to APP.
    Add {
        app: String,
        host: String,
        /// Send Strict-Transport-Security on HTTPS answers for this host.
        #[arg(long)]
        hsts: bool,
    },
    /// Stop routing HOST to APP.
    Remove { app: String, host: String },
    /// Domains, per app, and their certificates.
    List {
        app: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Install a certificate (PEM chain) and its private key for HOST; the key is sealed
    /// at rest. Used at the next handshake, no restart.
    Cert {
        host: String,
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Obtain and renew certificates for every domain from an ACME CA (RFC 8555; Let's
    /// Encrypt by default), answering HTTP-01 challenges on the HTTP listener or
    /// TLS-ALPN-01 ones on the HTTPS listener.
    Acme {
        /// The account's contact address.
        #[arg(long)]
        email: String,
        /// The CA's directory URL (default: Let's Encrypt's production directory).
        #[arg(long, value_name = "URL")]
        directory: Option<String>,
        /// A PEM root to trust for the directory's HTTPS (a test CA).
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// How the CA checks that a domain is ours: `http-01` (the HTTP listener, port
        /// 80), `tls-alpn-01` (the HTTPS listener, port 443), or `auto`: TLS-ALPN-01 when
        /// HTTPS is on port 443 and HTTP is not on port 80, else HTTP-01, each falling
        /// back on the other.
        #[arg(long, value_name = "TYPE", default_value = "auto")]
        challenge: String,
    },
    /// Per host: certificate source, issuer, expiry, last ACME attempt and error.
    Status {
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Answer every request to APP with 503 and Retry-After.
    On {
        app: String,
        /// A line for the page.
        #[arg(long)]
        message: Option<String>,
    },
    /// Serve APP again.
    Off { app: String },
}

#[derive(Debug, Subcommand)]
pub enum ControllerCommand {
    /// Run the controller in the foreground (the CLI starts it on first use).
    Run,
    /// Whether the controller runs, and where its state is.
    Status,
    /// Stop the controller: apps, the ingress and managed backing servers keep running (the
    /// ingress stops with it when no app is deployed).
    Stop,
    /// Write and enable a systemd unit that runs the controller at boot (it brings every
    /// app back: units, ingress, certificates).
    Install {
        /// Where to write the unit (default /etc/systemd/system/twelve-controller.service).
        #[arg(long, value_name = "FILE")]
        unit_file: Option<PathBuf>,
        /// Write the file only: no `systemctl enable`.
        #[arg(long)]
        no_enable: bool,
    },
    /// Disable and remove the systemd unit.
    Uninstall {
        #[arg(long, value_name = "FILE")]
        unit_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// The targets, in Prometheus http_sd format.
    Sd,
    /// A prometheus.yml block: scrape_configs pointing Prometheus at the SD endpoint, and
    /// rule_files naming the apps' alert rules (the framework's and the charm's
    /// cos_custom/prometheus_alert_rules), written to --rules-dir.
    ///
    /// Prometheus reads rule files when it starts and on reload: run this again after a
    /// deploy that changes them, then reload Prometheus (SIGHUP).
    PrometheusConfig {
        /// Where to write one `<app>.rules.yml` per app (default:
        /// TWELVE_HOME/cos/prometheus-rules); it must be readable by Prometheus.
        #[arg(long)]
        rules_dir: Option<PathBuf>,
    },
    /// Write the apps' Loki alert rules (the charm's cos_custom/loki_alert_rules) for
    /// Loki's ruler: DIR/<tenant>/<app>.yaml, where DIR is the ruler's local storage
    /// directory (`ruler.storage.local.directory`).
    LokiRules {
        dir: PathBuf,
        /// Loki's tenant (`fake` when Loki runs with auth_enabled: false).
        #[arg(long, default_value = "fake")]
        tenant: String,
    },
    /// Write the apps' Grafana dashboards (twelve's default for the framework and the
    /// charm's cos_custom/grafana_dashboards) as JSON files to DIR.
    Dashboards { dir: PathBuf },
    /// twelve's own metrics (and the ingress's), in Prometheus text format.
    Show,
}
