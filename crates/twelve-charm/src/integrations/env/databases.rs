//! PostgreSQL, MySQL, MongoDB (data_platform_libs), Redis and Valkey: a connection URL split
//! into `<P>_DB_*` variables, plus the Spring Boot properties.

use super::super::{
    IntegrationContext, IntegrationEnv, IntegrationKind, RelationData, RelationDataError,
};
use super::common::{get, invalid, is_spring, missing, parse_bool, unusable, EnvBuilder};
use super::urlparse::{db_url_env_vars, encode_userinfo, ParsedUrl};

/// `postgresql`, `mysql`, `mongodb`: `uri`, or `username` + `password` + `endpoints`
/// (+ `database`, default the app name).
pub(crate) fn sql_or_mongo(
    kind: IntegrationKind,
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let (scheme, prefix) = match kind {
        IntegrationKind::Postgresql => ("postgresql", "POSTGRESQL"),
        IntegrationKind::Mysql => ("mysql", "MYSQL"),
        _ => ("mongodb", "MONGODB"),
    };
    let uri = match get(data, "uri") {
        Some(uri) => uri.trim().to_string(),
        None => {
            let gaps = missing(data, &["username", "password", "endpoints"]);
            if !gaps.is_empty() {
                return Err(unusable(
                    ctx,
                    format!("no uri, and no {} yet", gaps.join(", ")),
                ));
            }
            let endpoints = get(data, "endpoints").unwrap_or_default();
            let endpoint = endpoints.split(',').next().unwrap_or_default().trim();
            let database = get(data, "database").unwrap_or(ctx.app);
            format!(
                "{scheme}://{}:{}@{endpoint}/{database}",
                encode_userinfo(get(data, "username").unwrap_or_default()),
                encode_userinfo(get(data, "password").unwrap_or_default()),
            )
        }
    };
    let mut b = EnvBuilder::default();
    let parsed = db_url_env_vars(&mut b, prefix, &uri)
        .map_err(|e| unusable(ctx, format!("uri {uri:?}: {e}")))?;
    if is_spring(ctx) {
        if kind == IntegrationKind::Mongodb {
            if parsed.password().is_some() {
                b.set_secret("spring.data.mongodb.uri", uri.as_str());
            } else {
                b.set("spring.data.mongodb.uri", uri.as_str());
            }
        } else {
            b.set("spring.datasource.url", jdbc_url(&parsed));
            b.set("spring.jpa.hibernate.ddl-auto", "none");
            if let Some(u) = parsed.username().filter(|u| !u.is_empty()) {
                b.set("spring.datasource.username", u);
            }
            if let Some(p) = parsed.password().filter(|p| !p.is_empty()) {
                b.set_secret("spring.datasource.password", p);
            }
        }
    }
    Ok(b.finish())
}

/// `jdbc:<scheme>://<host>[:<port>]<path>` (paas-charm writes `:None` when the port is absent).
fn jdbc_url(parsed: &ParsedUrl) -> String {
    let host = parsed.hostname().unwrap_or_default();
    let port = parsed
        .port()
        .ok()
        .flatten()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!("jdbc:{}://{host}{port}{}", parsed.scheme, parsed.path)
}

/// `redis`: `uri`, e.g. `redis://host:6379` or `redis://user:pass@host:6379/0`.
pub(crate) fn redis(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let Some(uri) = get(data, "uri").map(str::trim) else {
        return Err(unusable(ctx, "no uri yet"));
    };
    let parsed = ParsedUrl::parse(uri).map_err(|e| invalid(ctx, format!("uri {uri:?}: {e}")))?;
    if parsed.scheme == "redis"
        && parsed.netloc.ends_with(":None")
        && !parsed.netloc.contains('@')
        && parsed.path.is_empty()
    {
        return Err(unusable(ctx, format!("{uri} has no port yet")));
    }
    url::Url::parse(uri).map_err(|e| invalid(ctx, format!("uri {uri:?} is not a URL: {e}")))?;
    let mut b = EnvBuilder::default();
    db_url_env_vars(&mut b, "REDIS", uri).map_err(|e| invalid(ctx, format!("uri {uri:?}: {e}")))?;
    if is_spring(ctx) {
        if parsed.password().is_some() {
            b.set_secret("spring.data.redis.url", uri);
        } else {
            b.set("spring.data.redis.url", uri);
        }
        b.set_opt("spring.data.redis.host", parsed.hostname().as_deref());
        if let Ok(Some(port)) = parsed.port() {
            b.set("spring.data.redis.port", port.to_string());
        }
        b.set_opt(
            "spring.data.redis.username",
            parsed.username().as_deref().filter(|u| !u.is_empty()),
        );
        b.set_secret_opt(
            "spring.data.redis.password",
            parsed.password().as_deref().filter(|p| !p.is_empty()),
        );
    }
    Ok(b.finish())
}

/// `valkey`: `uri` (`valkey://host:port`), or `endpoints` (`host:port`, as the provider sends
/// it), or `host` + `port`; with `username`/`password` inserted into the URL.
pub(crate) fn valkey(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    if let Some(tls) = get(data, "tls") {
        match parse_bool(tls) {
            Some(true) => return Err(invalid(ctx, "TLS mode is not supported for Valkey")),
            Some(false) => {}
            None => {
                return Err(invalid(
                    ctx,
                    format!("tls must be true or false, not {tls:?}"),
                ))
            }
        }
    }
    let endpoint = match (get(data, "uri"), get(data, "endpoints"), get(data, "host")) {
        (Some(uri), _, _) => uri.trim().to_string(),
        (None, Some(endpoints), _) => endpoints
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        (None, None, Some(host)) => match get(data, "port") {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        },
        (None, None, None) => return Err(unusable(ctx, "no uri, endpoints or host yet")),
    };
    let userinfo = match (get(data, "username"), get(data, "password")) {
        (Some(u), Some(p)) => format!("{}:{}@", encode_userinfo(u), encode_userinfo(p)),
        (Some(_), None) => return Err(invalid(ctx, "username is given without a password")),
        (None, Some(p)) => format!(":{}@", encode_userinfo(p)),
        (None, None) => String::new(),
    };
    let url = match endpoint.split_once("://") {
        None => format!("valkey://{userinfo}{endpoint}"),
        Some((scheme, rest)) if !rest.split('/').next().unwrap_or_default().contains('@') => {
            format!("{scheme}://{userinfo}{rest}")
        }
        Some(_) => endpoint.clone(),
    };
    let mut b = EnvBuilder::default();
    db_url_env_vars(&mut b, "VALKEY", &url)
        .map_err(|e| invalid(ctx, format!("endpoint {endpoint:?}: {e}")))?;
    b.set(
        "VALKEY_DB_READ_ONLY_ENDPOINTS",
        get(data, "read-only-endpoints").unwrap_or_default(),
    );
    b.set(
        "VALKEY_DB_SENTINEL_ENDPOINTS",
        get(data, "sentinel-endpoints").unwrap_or_default(),
    );
    b.set("VALKEY_MODE", get(data, "mode").unwrap_or_default());
    b.set("VALKEY_VERSION", get(data, "version").unwrap_or_default());
    Ok(b.finish())
}
