//! OpenFGA: the store and API URLs as `FGA_*`, and the OpenFGA Spring Boot starter properties.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use super::common::{get, is_spring, missing, unusable, EnvBuilder};

pub(crate) const REQUIRED: [&str; 2] = ["store-id", "http-api-url"];

pub(crate) fn openfga(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let gaps = missing(data, &REQUIRED);
    if !gaps.is_empty() {
        return Err(unusable(ctx, format!("no {} yet", gaps.join(", "))));
    }
    let mut b = EnvBuilder::default();
    b.set_opt("FGA_STORE_ID", get(data, "store-id"));
    b.set_secret_opt("FGA_TOKEN", get(data, "token"));
    b.set_opt("FGA_GRPC_API_URL", get(data, "grpc-api-url"));
    b.set_opt("FGA_HTTP_API_URL", get(data, "http-api-url"));
    if is_spring(ctx) {
        b.set_opt("openfga.store-id", get(data, "store-id"));
        b.set("openfga.credentials.method", "API_TOKEN");
        b.set_secret_opt("openfga.credentials.config.api-token", get(data, "token"));
        b.set_opt("openfga.api-url", get(data, "http-api-url"));
    }
    Ok(b.finish())
}
