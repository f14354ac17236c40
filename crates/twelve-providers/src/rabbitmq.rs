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

enum Admin {
    /// `rabbitmqctl` against the local node.
    Ctl { ctl: PathBuf },
    /// The management HTTP API.
    Http {
        base: url::Url,
        user: String,
        password: String,
    },
}

struct Target {
    server: String,
    admin_url: String,
    admin_user: String,
    host: String,
    port: u16,
    how: Admin,
}

fn is_local(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]")
}

fn target(p: &Providers, server: &Server) -> Result<Target> {
    let Server::External {
        admin_url,
        management_url,
        ..
    } = server
    else {
        return Err(unsupported_managed());
    };
    let parsed = amqp::parse_url(admin_url).map_err(|e| ProviderError::InvalidUrl {
        kind: "rabbitmq".into(),
        url: util::redact_url(admin_url),
        reason: e.to_string(),
    })?;
    let how = if let Some(m) = management_url {
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
        Admin::Ctl {
            ctl: p
                .binaries
                .find("rabbitmqctl", Kind::Rabbitmq.debian_package())?,
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
    })
}

fn unsupported_managed() -> ProviderError {
    ProviderError::Unsupported {
        what: "a RabbitMQ broker managed by twelve".into(),
        hint: "adopt an existing broker instead: `twelve deploy rabbitmq --external amqp://USER:PASSWORD@HOST:5672/` \
               (on Debian: `apt-get install rabbitmq-server` starts one on 127.0.0.1:5672)"
            .into(),
    }
}

/// `rabbitmqctl -q ARGS`, with `stdin` written to its standard input (passwords never go
/// on a command line).
async fn ctl(
    t: &Target,
    ctl: &Path,
    args: &[&str],
    stdin: Option<&str>,
    action: &str,
) -> Result<std::result::Result<(), String>> {
    let mut cmd = tokio::process::Command::new(ctl);
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
    let mut input = child.stdin.take().expect("piped");
    if let Some(s) = stdin {
        let _ = input.write_all(s.as_bytes()).await;
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| failed("rabbitmqctl did not answer within 60 s".into()))?
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let text = format!(
        "{} {}",
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let secrets: Vec<&str> = stdin.into_iter().collect();
    Ok(Err(scrub(
        text.trim().replace("Error:\n", "").replace('\n', " "),
        &secrets,
    )))
}

async fn ctl_ok(
    t: &Target,
    ctl_path: &Path,
    args: &[&str],
    stdin: Option<&str>,
    action: &str,
) -> Result<()> {
    ctl(t, ctl_path, args, stdin, action)
        .await?
        .map_err(|reason| ProviderError::Failed {
            server: t.server.clone(),
            action: action.into(),
            reason: format!("{reason} (rabbitmqctl needs the broker's Erlang cookie: run twelve as root or as the rabbitmq user)"),
        })
}

struct Http<'a> {
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

    async fn send(
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

fn http<'a>(t: &'a Target) -> Option<Http<'a>> {
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
        Admin::Ctl { ctl: c } => {
            ctl_ok(&t, c, &["list_vhosts"], None, "rabbitmqctl list_vhosts").await
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
        Admin::Ctl { ctl: c } => {
            ctl_ok(
                &t,
                c,
                &["add_vhost", app],
                None,
                &format!("creating vhost {app}"),
            )
            .await?;
            let action = format!("creating user {app}");
            if let Err(e) = ctl(&t, c, &["add_user", app], Some(&pw), &action).await? {
                if !e.contains("already exists") {
                    return Err(ProviderError::Failed {
                        server: t.server.clone(),
                        action,
                        reason: e,
                    });
                }
                ctl_ok(&t, c, &["change_password", app], Some(&pw), &action).await?;
            }
            ctl_ok(&t, c, &["set_user_tags", app], None, &action).await?;
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
        Admin::Ctl { ctl: c } => {
            let action = format!("deleting user {app}");
            // Deleting a user closes its connections.
            if let Err(e) = ctl(&t, c, &["delete_user", app], None, &action).await? {
                if !e.contains("does not exist") {
                    return Err(ProviderError::Failed {
                        server: t.server.clone(),
                        action,
                        reason: e,
                    });
                }
            }
            if destroy_data {
                let action = format!("deleting vhost {app}");
                if let Err(e) = ctl(&t, c, &["delete_vhost", app], None, &action).await? {
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

pub(crate) async fn start(p: &Providers, _dir: &Path, _port: u16) -> Result<ManagedInfo> {
    // Say what is missing first, then that managed brokers are not supported.
    p.binaries
        .find("rabbitmq-server", Kind::Rabbitmq.debian_package())?;
    Err(unsupported_managed())
}
