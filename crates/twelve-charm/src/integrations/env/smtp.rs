//! SMTP (smtp-integrator): the relay's host, port, credentials and security as `SMTP_*`, and
//! the Spring Mail properties.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use super::common::{get, invalid, is_spring, missing, parse_bool, parse_port, EnvBuilder};

pub(crate) const REQUIRED: [&str; 2] = ["host", "port"];
pub(crate) const AUTH_TYPES: [&str; 3] = ["none", "not_provided", "plain"];
pub(crate) const TRANSPORT_SECURITIES: [&str; 3] = ["none", "starttls", "tls"];

/// paas-charm filters with `v not in ("none")`, a substring test that also drops values such as
/// `on`, `no`, `n` or `e`. twelve drops only absent values and the word `none`.
fn keep(v: Option<&str>) -> Option<&str> {
    v.filter(|v| *v != "none")
}

pub(crate) fn smtp(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let gaps = missing(data, &REQUIRED);
    if !gaps.is_empty() {
        return Err(invalid(ctx, format!("missing {}", gaps.join(", "))));
    }
    let port_raw = get(data, "port").unwrap_or_default().trim();
    let port = parse_port(port_raw)
        .ok_or_else(|| invalid(ctx, format!("port {port_raw:?} is not a number")))?;
    let auth_type = get(data, "auth-type").unwrap_or("none");
    if !AUTH_TYPES.contains(&auth_type) {
        return Err(invalid(
            ctx,
            format!(
                "auth-type must be one of {}, not {auth_type:?}",
                AUTH_TYPES.join(", ")
            ),
        ));
    }
    let security = get(data, "transport-security").unwrap_or("none");
    if !TRANSPORT_SECURITIES.contains(&security) {
        return Err(invalid(
            ctx,
            format!(
                "transport-security must be one of {}, not {security:?}",
                TRANSPORT_SECURITIES.join(", ")
            ),
        ));
    }
    let skip_verify = match get(data, "skip-ssl-verify") {
        Some(v) => parse_bool(v).ok_or_else(|| {
            invalid(
                ctx,
                format!("skip-ssl-verify must be true or false, not {v:?}"),
            )
        })?,
        None => false,
    };
    let user = get(data, "user");
    let password = get(data, "password");
    let domain = get(data, "domain");

    let mut b = EnvBuilder::default();
    b.set_opt("SMTP_HOST", keep(get(data, "host")));
    b.set("SMTP_PORT", port.to_string());
    b.set_opt("SMTP_USER", keep(user));
    b.set_secret_opt("SMTP_PASSWORD", keep(password));
    b.set_opt("SMTP_AUTH_TYPE", keep(Some(auth_type)));
    b.set_opt("SMTP_TRANSPORT_SECURITY", keep(Some(security)));
    b.set_opt("SMTP_DOMAIN", keep(domain));
    // Python's str(bool), as paas-charm.
    b.set(
        "SMTP_SKIP_SSL_VERIFY",
        if skip_verify { "True" } else { "False" },
    );
    if is_spring(ctx) {
        b.set_opt("spring.mail.host", get(data, "host"));
        b.set("spring.mail.port", port.to_string());
        match (user, domain) {
            (Some(u), Some(d)) => b.set("spring.mail.username", format!("{u}@{d}")),
            (Some(u), None) => b.set("spring.mail.username", u),
            _ => {}
        }
        b.set_secret_opt("spring.mail.password", password);
        // paas-charm passes the auth type (`plain`, `none`), which JavaMail reads as false.
        let auth = auth_type == "plain" || (auth_type == "not_provided" && user.is_some());
        b.set("spring.mail.properties.mail.smtp.auth", auth.to_string());
        b.set(
            "spring.mail.properties.mail.smtp.starttls.enable",
            (security == "starttls").to_string(),
        );
    }
    Ok(b.finish())
}
