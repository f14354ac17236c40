//! RabbitMQ: a vhost and a user per app, the user having full permissions on that vhost
//! only. Local brokers are administered with `rabbitmqctl`, others through the management
//! HTTP API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::amqp::{self, AmqpLoginError};
use crate::util::{self, scrub};
use crate::{Kind, ManagedInfo, ProviderError, Providers, RelationData, Result, Server};

pub(crate) enum Admin {
    /// `rabbitmqctl` against the local node (`-n node` for managed brokers).
    Ctl { ctl: PathBuf, node: Option<String> },
    /// The management HTTP API.
    Http {
        base: url::Url,
        user: String,
        password: String,
    },
}

pub(crate) struct Target {
    pub(crate) server: String,
    admin_url: String,
    admin_user: String,
    host: String,
    port: u16,
    pub(crate) how: Admin,
    /// `HOME` for `rabbitmqctl`: a managed broker's directory, which holds its own Erlang
    /// cookie (`None`: the machine's broker, administered as the Debian wrapper does).
    ctl_home: Option<PathBuf>,
}

/// The Debian package's `rabbitmq-server`/`rabbitmqctl` are a wrapper that runs the real
/// script as the machine's `rabbitmq` user (with that user's Erlang cookie) when started
/// by root. A managed broker runs as a user of its own with a cookie of its own, so it
/// uses the real script (`/usr/lib/rabbitmq/bin/<name>`) the wrapper would have run.
fn real_script(found: PathBuf) -> PathBuf {
    let (Ok(resolved), Some(name)) = (std::fs::canonicalize(&found), found.file_name()) else {
        return found;
    };
    if resolved.file_name() != Some(std::ffi::OsStr::new("rabbitmq-script-wrapper")) {
        return found;
    }
    match resolved.parent().map(|d| d.join(name)) {
        Some(real) if real.exists() => real,
        _ => found,
    }
}

fn is_local(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]")
}

pub(crate) fn target(p: &Providers, server: &Server) -> Result<Target> {
    let (admin_url, management_url, node, ctl_home) = match server {
        Server::External {
            admin_url,
            management_url,
            ..
        } => (admin_url.clone(), management_url.clone(), None, None),
        Server::Managed { dir, port, .. } => {
            let pw = util::read_admin_secret(dir).ok_or_else(|| ProviderError::Unreachable {
                server: server.describe(),
                reason: format!(
                    "{} is missing: the server was never started by twelve; start it first",
                    dir.join("admin.secret").display()
                ),
            })?;
            (
                format!("amqp://{ADMIN_USER}:{pw}@127.0.0.1:{port}/"),
                None,
                Some(node_name(*port)),
                Some(dir.clone()),
            )
        }
    };
    let admin_url = &admin_url;
    let parsed = amqp::parse_url(admin_url).map_err(|e| ProviderError::InvalidUrl {
        kind: "rabbitmq".into(),
        url: util::redact_url(admin_url),
        reason: e.to_string(),
    })?;
    let how = if let Some(m) = &management_url {
        let bad = |reason: String| ProviderError::InvalidUrl {
            kind: "rabbitmq management".into(),
            url: util::redact_url(m),
            reason,
        };
        let mut base = url::Url::parse(m).map_err(|e| bad(e.to_string()))?;
        if base.scheme() != "http" {
            return Err(bad(
                "only http:// management URLs are supported (use a local tunnel for https)".into(),
            ));
        }
        let (user, password) = if base.username().is_empty() {
            (parsed.user.clone(), parsed.password.clone())
        } else {
            (
                util::percent_decode(base.username()),
                util::percent_decode(base.password().unwrap_or("")),
            )
        };
        let _ = base.set_username("");
        let _ = base.set_password(None);
        Admin::Http {
            base,
            user,
            password,
        }
    } else if is_local(&parsed.host) {
        let ctl = p
            .binaries
            .find("rabbitmqctl", Kind::Rabbitmq.debian_package())?;
        Admin::Ctl {
            ctl: if ctl_home.is_some() {
                real_script(ctl)
            } else {
                ctl
            },
            node,
        }
    } else {
        return Err(ProviderError::Unsupported {
            what: format!("administering the remote RabbitMQ at {}", parsed.host),
            hint: "give its management API URL too (--management-url http://admin:PASSWORD@HOST:15672)"
                .into(),
        });
    };
    Ok(Target {
        server: server.describe(),
        admin_url: admin_url.clone(),
        admin_user: parsed.user,
        host: parsed.host,
        port: parsed.port,
        how,
        ctl_home,
    })
}

/// `rabbitmqctl [-n node] -q ARGS`, with `input` written to its standard input (passwords
/// never go on a command line), within `limit`: its stdout, or why it failed (stderr and
/// stdout on one line, `secrets` scrubbed). `Err` is for a command that could not run.
pub(crate) async fn ctl_output(
    t: &Target,
    (ctl, node): (&Path, &Option<String>),
    args: &[&str],
    input: Option<&[u8]>,
    secrets: &[&str],
    limit: Duration,
    action: &str,
) -> Result<std::result::Result<Vec<u8>, String>> {
    let mut cmd = tokio::process::Command::new(ctl);
    if let Some(home) = &t.ctl_home {
        cmd.env("HOME", home);
    }
    if let Some(n) = node {
        cmd.arg("-n").arg(n);
    }
    cmd.arg("-q")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let failed = |reason: String| ProviderError::Failed {
        server: t.server.clone(),
        action: action.into(),
        reason,
    };
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("piped");
    if let Some(data) = input {
        // A command that exits without reading says why on stderr, below.
        let _ = stdin.write_all(data).await;
    }
    drop(stdin);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| {
            failed(format!(
                "rabbitmqctl did not answer within {} s",
                limit.as_secs()
            ))
        })?
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        return Ok(Ok(out.stdout));
    }
    let text = format!(
        "{} {}",
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(Err(scrub(
        text.trim().replace("Error:\n", "").replace('\n', " "),
        secrets,
    )))
}

/// [`ctl_output`] for commands whose output does not matter (60 s; the input is a
/// password, scrubbed from errors).
async fn run_ctl(
    t: &Target,
    ctl_path: (&Path, &Option<String>),
    args: &[&str],
    stdin: Option<&str>,
    action: &str,
) -> Result<std::result::Result<(), String>> {
    let secrets: Vec<&str> = stdin.into_iter().collect();
    Ok(ctl_output(
        t,
        ctl_path,
        args,
        stdin.map(str::as_bytes),
        &secrets,
        Duration::from_secs(60),
        action,
    )
    .await?
    .map(|_| ()))
}

async fn ctl_ok(
    t: &Target,
    ctl_path: (&Path, &Option<String>),
    args: &[&str],
    stdin: Option<&str>,
    action: &str,
) -> Result<()> {
    run_ctl(t, ctl_path, args, stdin, action)
        .await?
        .map_err(|reason| ProviderError::Failed {
            server: t.server.clone(),
            action: action.into(),
            reason: format!("{reason} (rabbitmqctl needs the broker's Erlang cookie: a managed broker's is in its directory, the machine's broker's is the rabbitmq user's: run twelve as root)"),
        })
}

pub(crate) struct Http<'a> {
    t: &'a Target,
    client: reqwest::Client,
    base: &'a url::Url,
    user: &'a str,
    password: &'a str,
}

impl Http<'_> {
    fn url(&self, segments: &[&str]) -> url::Url {
        let mut u = self.base.clone();
        {
            let mut s = u.path_segments_mut().expect("http URL");
            s.pop_if_empty().push("api");
            for seg in segments {
                s.push(seg);
            }
        }
        u
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: Option<serde_json::Value>,
        action: &str,
        ok_404: bool,
    ) -> Result<serde_json::Value> {
        let mut req = self
            .client
            .request(method, self.url(segments))
            .basic_auth(self.user, Some(self.password));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ProviderError::Unreachable {
            server: self.t.server.clone(),
            reason: format!("management API: {}", scrub(e, &[self.password])),
        })?;
        let status = resp.status();
        if status.is_success() || (ok_404 && status == reqwest::StatusCode::NOT_FOUND) {
            return Ok(resp.json().await.unwrap_or(serde_json::Value::Null));
        }
        let text = resp.text().await.unwrap_or_default();
        let mut secrets = vec![self.password];
        if let Some(pw) = body
            .as_ref()
            .and_then(|b| b.get("password"))
            .and_then(|p| p.as_str())
        {
            secrets.push(pw);
        }
        Err(ProviderError::Failed {
            server: self.t.server.clone(),
            action: action.into(),
            reason: scrub(
                format!("management API answered {status}: {text}"),
                &secrets,
            ),
        })
    }
}

pub(crate) fn http<'a>(t: &'a Target) -> Option<Http<'a>> {
    match &t.how {
        Admin::Http {
            base,
            user,
            password,
        } => Some(Http {
            t,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("reqwest client"),
            base,
            user,
            password,
        }),
        Admin::Ctl { .. } => None,
    }
}

fn login_error(t: &Target, e: AmqpLoginError) -> ProviderError {
    ProviderError::Unreachable {
        server: t.server.clone(),
        reason: e.to_string(),
    }
}

pub(crate) async fn check(p: &Providers, server: &Server) -> Result<()> {
    let t = target(p, server)?;
    amqp::amqp_login(&t.admin_url)
        .await
        .map_err(|e| login_error(&t, e))?;
    match &t.how {
        Admin::Ctl { ctl, node } => {
            ctl_ok(
                &t,
                (ctl, node),
                &["list_vhosts"],
                None,
                "rabbitmqctl list_vhosts",
            )
            .await
        }
        Admin::Http { .. } => {
            let h = http(&t).expect("http");
            let who = h
                .send(
                    reqwest::Method::GET,
                    &["whoami"],
                    None,
                    "GET /api/whoami",
                    false,
                )
                .await?;
            let tags = who.get("tags").map(|t| t.to_string()).unwrap_or_default();
            if !tags.contains("administrator") {
                return Err(ProviderError::NotAdmin {
                    server: t.server.clone(),
                    reason: format!("management user `{}` lacks the administrator tag", h.user),
                });
            }
            Ok(())
        }
    }
}

fn refuse_admin_name(t: &Target, app: &str) -> Result<()> {
    if app == t.admin_user {
        return Err(ProviderError::Failed {
            server: t.server.clone(),
            action: format!("provisioning `{app}`"),
            reason: "the app has the same name as the admin user; rename the app".into(),
        });
    }
    Ok(())
}

pub(crate) async fn provision(p: &Providers, server: &Server, app: &str) -> Result<RelationData> {
    let t = target(p, server)?;
    refuse_admin_name(&t, app)?;
    let pw = util::password();
    match &t.how {
        Admin::Ctl { ctl, node } => {
            let c = (ctl.as_path(), node);
            let vhost_action = format!("creating vhost {app}");
            let action = format!("creating user {app}");
            // Each rabbitmqctl call takes about a second: run independent ones together.
            let (add_vhost, add_user) = (["add_vhost", app], ["add_user", app]);
            let (vhost, user) = tokio::join!(
                ctl_ok(&t, c, &add_vhost, None, &vhost_action),
                run_ctl(&t, c, &add_user, Some(&pw), &action),
            );
            vhost?;
            if let Err(e) = user? {
                if !e.contains("already exists") {
                    return Err(ProviderError::Failed {
                        server: t.server.clone(),
                        action,
                        reason: e,
                    });
                }
                ctl_ok(&t, c, &["change_password", app], Some(&pw), &action).await?;
            }
            ctl_ok(
                &t,
                c,
                &["set_permissions", "-p", app, app, ".*", ".*", ".*"],
                None,
                &format!("granting {app} access to vhost {app}"),
            )
            .await?;
        }
        Admin::Http { .. } => {
            let h = http(&t).expect("http");
            use reqwest::Method;
            h.send(
                Method::PUT,
                &["vhosts", app],
                Some(serde_json::json!({})),
                &format!("creating vhost {app}"),
                false,
            )
            .await?;
            h.send(
                Method::PUT,
                &["users", app],
                Some(serde_json::json!({"password": pw, "tags": ""})),
                &format!("creating user {app}"),
                false,
            )
            .await?;
            h.send(
                Method::PUT,
                &["permissions", app, app],
                Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
                &format!("granting {app} access to vhost {app}"),
                false,
            )
            .await?;
        }
    }
    let endpoint = util::endpoint(&t.host, t.port);
    let mut data = RelationData::new();
    data.insert("uri".into(), format!("amqp://{app}:{pw}@{endpoint}/{app}"));
    data.insert("username".into(), app.to_string());
    data.insert("password".into(), pw);
    data.insert("hostname".into(), t.host.clone());
    data.insert("port".into(), t.port.to_string());
    data.insert("vhost".into(), app.to_string());
    Ok(data)
}

pub(crate) async fn revoke(
    p: &Providers,
    server: &Server,
    app: &str,
    destroy_data: bool,
) -> Result<()> {
    let t = target(p, server)?;
    refuse_admin_name(&t, app)?;
    match &t.how {
        Admin::Ctl { ctl, node } => {
            let c = (ctl.as_path(), node);
            let user_action = format!("deleting user {app}");
            let vhost_action = format!("deleting vhost {app}");
            // Deleting a user closes its connections.
            let (delete_user, delete_vhost) = (["delete_user", app], ["delete_vhost", app]);
            let (user, vhost) =
                tokio::join!(run_ctl(&t, c, &delete_user, None, &user_action), async {
                    if destroy_data {
                        run_ctl(&t, c, &delete_vhost, None, &vhost_action).await
                    } else {
                        Ok(Ok(()))
                    }
                });
            for (res, action) in [(user?, user_action), (vhost?, vhost_action)] {
                if let Err(e) = res {
                    if !e.contains("does not exist") {
                        return Err(ProviderError::Failed {
                            server: t.server.clone(),
                            action,
                            reason: e,
                        });
                    }
                }
            }
        }
        Admin::Http { .. } => {
            let h = http(&t).expect("http");
            use reqwest::Method;
            h.send(
                Method::DELETE,
                &["users", app],
                None,
                &format!("deleting user {app}"),
                true,
            )
            .await?;
            if destroy_data {
                h.send(
                    Method::DELETE,
                    &["vhosts", app],
                    None,
                    &format!("deleting vhost {app}"),
                    true,
                )
                .await?;
            }
        }
    }
    Ok(())
}

// ---- managed broker ----

const ADMIN_USER: &str = "twelve-admin";

/// The Erlang node of the managed broker on `port`.
fn node_name(port: u16) -> String {
    format!("twelve-{port}@localhost")
}

pub(crate) fn running_pid(dir: &Path) -> Option<u32> {
    util::pid_from_file(&dir.join("rabbit.pid"))
}

fn admin_url(port: u16) -> String {
    format!("amqp://{ADMIN_USER}@127.0.0.1:{port}/")
}

/// A broker of its own: Erlang node `twelve-<port>@localhost` with its Mnesia database,
/// logs and config under `dir`, AMQP on 127.0.0.1:`port`, distribution on loopback. Run as
/// the service's user when twelve is root (never the machine's `rabbitmq`), with an Erlang
/// cookie of its own in `dir`, which `rabbitmqctl -n` reads (`HOME=dir`) to administer it.
pub(crate) async fn start(p: &Providers, dir: &Path, port: u16) -> Result<ManagedInfo> {
    let server = Server::managed(Kind::Rabbitmq, dir, port);
    let desc = server.describe();
    let pkg = Kind::Rabbitmq.debian_package();
    let rabbitmq_server = real_script(p.binaries.find("rabbitmq-server", pkg)?);
    let ctl_path = real_script(p.binaries.find("rabbitmqctl", pkg)?);
    if let Some(pid) = running_pid(dir) {
        return Ok(ManagedInfo {
            pid,
            admin_url: admin_url(port),
        });
    }
    if !util::port_free(port) {
        return Err(ProviderError::PortInUse {
            kind: "RabbitMQ".into(),
            port,
        });
    }
    util::create_dir(dir, 0o700)?;
    let pw = util::admin_secret(dir)?;
    let log = dir.join("server.log");
    let w = |name: &str, text: &str| {
        let path = dir.join(name);
        // Written beside and renamed: never through a link planted in the directory.
        util::write_private(&path, text)
    };
    w("enabled_plugins", "[].\n")?;
    w(
        "rabbitmq.conf",
        &format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users.guest = true\n"),
    )?;
    w("rabbitmq-env.conf", "")?;
    let log_file = util::open_log(&log)?;
    // The broker's user owns the directory (Mnesia, logs, its Erlang cookie), 0700; one an
    // older twelve made (owned by the machine's `rabbitmq`) is taken over.
    let user = util::server_user(p.service_user.as_deref(), &desc)?;
    util::hand_over(dir, user.as_ref())?;
    let dist_port = crate::ports::free_tcp_port(&[port]).map_err(|e| ProviderError::io(dir, e))?;
    let node = node_name(port);
    let d = |name: &str| dir.join(name);
    let mut cmd = util::detached(&rabbitmq_server, user.as_ref());
    // The Erlang cookie is `$HOME/.erlang.cookie`: the broker's own, in its directory
    // (made by the broker on its first start), which rabbitmqctl reads as root.
    cmd.env("HOME", dir)
        .current_dir(dir)
        .env("RABBITMQ_NODENAME", &node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
        .env("RABBITMQ_LOG_BASE", d("log"))
        .env("RABBITMQ_PID_FILE", d("rabbit.pid"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
        .env("RABBITMQ_CONFIG_FILE", d("rabbitmq"))
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", d("advanced.config"))
        .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("ERL_FLAGS", "-kernel inet_dist_use_interface {127,0,0,1}")
        .stdout(
            log_file
                .try_clone()
                .map_err(|e| ProviderError::io(&log, e))?,
        )
        .stderr(log_file);
    let mut child = cmd.spawn().map_err(|e| ProviderError::StartFailed {
        server: desc.clone(),
        reason: e.to_string(),
        log: log.clone(),
    })?;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });

    // Erlang boots slowly on a loaded machine (over 30 s seen with two busy cores); a
    // broker that died shows in the log named by the error.
    let started = util::wait_for(std::time::Duration::from_secs(120), || async {
        if running_pid(dir).is_none() {
            return Err("no pid yet".to_string());
        }
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    if let Err(reason) = started {
        if let Some(pid) = running_pid(dir) {
            util::terminate(pid, std::time::Duration::from_secs(5)).await;
        }
        return Err(ProviderError::StartFailed {
            server: desc.clone(),
            reason: format!(
                "{reason}; last log lines: {}; if managed brokers do not work on this machine, \
                 adopt one with `--external amqp://USER:PASSWORD@HOST:5672/`",
                util::tail(&log, 5)
            ),
            log: log.clone(),
        });
    }

    // The admin user (password in dir/admin.secret); guest is removed.
    let t = Target {
        server: desc.clone(),
        admin_url: String::new(),
        admin_user: ADMIN_USER.into(),
        host: "127.0.0.1".into(),
        port,
        how: Admin::Ctl {
            ctl: ctl_path.clone(),
            node: Some(node.clone()),
        },
        ctl_home: Some(dir.to_path_buf()),
    };
    let node = Some(node);
    let c = (ctl_path.as_path(), &node);
    let action = "creating the admin user";
    if amqp::amqp_login(&format!("amqp://{ADMIN_USER}:{pw}@127.0.0.1:{port}/"))
        .await
        .is_ok()
    {
        let pid = running_pid(dir).unwrap_or_default();
        return Ok(ManagedInfo {
            pid,
            admin_url: admin_url(port),
        });
    }
    if let Err(e) = run_ctl(&t, c, &["add_user", ADMIN_USER], Some(&pw), action).await? {
        if !e.contains("already exists") {
            return Err(ProviderError::Failed {
                server: desc,
                action: action.into(),
                reason: e,
            });
        }
        ctl_ok(&t, c, &["change_password", ADMIN_USER], Some(&pw), action).await?;
    }
    let (tags, perms, _) = tokio::join!(
        ctl_ok(
            &t,
            c,
            &["set_user_tags", ADMIN_USER, "administrator"],
            None,
            action
        ),
        ctl_ok(
            &t,
            c,
            &["set_permissions", "-p", "/", ADMIN_USER, ".*", ".*", ".*"],
            None,
            action,
        ),
        run_ctl(&t, c, &["delete_user", "guest"], None, "removing guest"),
    );
    tags?;
    perms?;
    let pid = running_pid(dir).ok_or_else(|| ProviderError::StartFailed {
        server: desc.clone(),
        reason: "the broker stopped right after starting".into(),
        log: log.clone(),
    })?;
    Ok(ManagedInfo {
        pid,
        admin_url: admin_url(port),
    })
}

pub(crate) async fn stop(dir: &Path) -> Result<()> {
    if let Some(pid) = running_pid(dir) {
        util::terminate(pid, std::time::Duration::from_secs(30)).await;
    }
    Ok(())
}
