//! Tracing (Tempo, OTLP over HTTP): `OTEL_SERVICE_NAME` and `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! the same for every framework.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use super::common::{get, invalid, unusable, EnvBuilder};

pub(crate) fn tracing(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let Some(raw) = get(data, "endpoint") else {
        return Err(unusable(ctx, "no endpoint yet"));
    };
    // Several endpoints may be given: the app gets the first, as paas-charm does (the
    // tracing library's `get_endpoint` takes the first OTLP/HTTP receiver and warns about
    // the others); an OTLP exporter takes one URL. None at all is "not there yet".
    let Some(first) = raw.split(',').map(str::trim).find(|e| !e.is_empty()) else {
        return Err(unusable(ctx, "no endpoint yet"));
    };
    let url = url::Url::parse(first)
        .map_err(|e| invalid(ctx, format!("endpoint {first:?} is not a URL: {e}")))?;
    let mut b = EnvBuilder::default();
    b.set("OTEL_SERVICE_NAME", ctx.app);
    b.set("OTEL_EXPORTER_OTLP_ENDPOINT", url.to_string());
    Ok(b.finish())
}
