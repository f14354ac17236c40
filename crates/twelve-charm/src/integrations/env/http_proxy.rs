//! HTTP proxy relation: `HTTP_PROXY`/`http_proxy` and `HTTPS_PROXY`/`https_proxy`. `NO_PROXY`
//! comes from the machine's configuration, not from here.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use super::common::{get, unusable, EnvBuilder};
use super::urlparse::ParsedUrl;

pub(crate) fn http_proxy(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let http = get(data, "http-proxy").map(str::trim);
    let https = get(data, "https-proxy").map(str::trim);
    if http.is_none() && https.is_none() {
        return Err(unusable(ctx, "no http-proxy or https-proxy yet"));
    }
    let mut b = EnvBuilder::default();
    for (upper, lower, value) in [
        ("HTTP_PROXY", "http_proxy", http),
        ("HTTPS_PROXY", "https_proxy", https),
    ] {
        let Some(value) = value else { continue };
        // A proxy URL may carry credentials.
        if ParsedUrl::parse(value)
            .ok()
            .and_then(|p| p.password())
            .is_some()
        {
            b.secret(value);
        }
        b.set(upper, value);
        b.set(lower, value);
    }
    Ok(b.finish())
}
