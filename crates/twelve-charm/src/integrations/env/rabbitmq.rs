//! RabbitMQ: an AMQP URL (`amqp://user:pass@host:5672/%2F`) split into `RABBITMQ_*`, the
//! vhost, one URL per broker unit for HA clients (`RABBITMQ_CONNECT_STRINGS`, always set),
//! and the Spring Boot properties.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use super::common::{get, invalid, is_spring, missing, parse_port, unusable, EnvBuilder};
use super::urlparse::{encode_userinfo, quote_all, url_env_vars, ParsedUrl};
use percent_encoding::percent_decode_str;

/// The AMQP port paas-charm always uses.
const AMQP_PORT: u16 = 5672;

struct Amqp {
    username: String,
    password: String,
    hostname: String,
    port: u16,
    vhost: String,
}

impl Amqp {
    fn uri(&self, hostname: &str) -> String {
        format!(
            "amqp://{}:{}@{hostname}:{}/{}",
            encode_userinfo(&self.username),
            encode_userinfo(&self.password),
            self.port,
            quote_all(&self.vhost)
        )
    }
}

pub(crate) fn rabbitmq(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let port = match get(data, "port") {
        Some(p) => parse_port(p.trim())
            .ok_or_else(|| invalid(ctx, format!("port {p:?} is not a number")))?,
        None => AMQP_PORT,
    };
    let (uri, amqp) = match get(data, "uri") {
        Some(uri) => {
            let uri = uri.trim().to_string();
            let parsed =
                ParsedUrl::parse(&uri).map_err(|e| invalid(ctx, format!("uri {uri:?}: {e}")))?;
            let vhost_raw = parsed.path.strip_prefix('/').unwrap_or(&parsed.path);
            let vhost = if vhost_raw.is_empty() {
                "/".to_string()
            } else {
                unquote(vhost_raw)
            };
            let amqp = Amqp {
                username: parsed.username().unwrap_or_default(),
                password: parsed.password().unwrap_or_default(),
                hostname: parsed.hostname().unwrap_or_default(),
                port: parsed
                    .port()
                    .map_err(|e| invalid(ctx, format!("uri {uri:?}: {e}")))?
                    .unwrap_or(port),
                vhost,
            };
            (uri, amqp)
        }
        None => {
            let gaps = missing(data, &["username", "password", "hostname"]);
            if !gaps.is_empty() {
                return Err(unusable(
                    ctx,
                    format!("no uri, and no {} yet", gaps.join(", ")),
                ));
            }
            let amqp = Amqp {
                username: get(data, "username").unwrap_or_default().to_string(),
                password: get(data, "password").unwrap_or_default().to_string(),
                hostname: get(data, "hostname").unwrap_or_default().trim().to_string(),
                port,
                vhost: get(data, "vhost").unwrap_or("/").to_string(),
            };
            (amqp.uri(&amqp.hostname), amqp)
        }
    };
    let mut b = EnvBuilder::default();
    let parsed = url_env_vars(&mut b, "RABBITMQ", &uri)
        .map_err(|e| invalid(ctx, format!("uri {uri:?}: {e}")))?;
    if parsed.path.len() > 1 {
        let first = parsed.path.split('/').nth(1).unwrap_or_default();
        b.set("RABBITMQ_VHOST", unquote(first));
    }
    // paas-charm 1.11: one URI per broker unit, falling back to the one host, always set.
    let hosts: Vec<&str> = get(data, "hostnames")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let uris: Vec<String> = if hosts.is_empty() {
        vec![uri.clone()]
    } else {
        hosts.iter().map(|h| amqp.uri(h)).collect()
    };
    b.set_secret("RABBITMQ_CONNECT_STRINGS", uris.join(","));
    if is_spring(ctx) {
        b.set("spring.rabbitmq.virtual-host", amqp.vhost.as_str());
        b.set("spring.rabbitmq.username", amqp.username.as_str());
        b.set_secret("spring.rabbitmq.password", amqp.password.as_str());
        b.set("spring.rabbitmq.host", amqp.hostname.as_str());
        b.set("spring.rabbitmq.port", amqp.port.to_string());
    }
    Ok(b.finish())
}

fn unquote(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}
