//! S3 (data_platform_libs `s3`): credentials, bucket and options as `S3_*`, and the Spring
//! Cloud AWS properties.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use super::common::{get, get_any, invalid, is_spring, missing, py_json, EnvBuilder};

pub(crate) const REQUIRED: [&str; 3] = ["access-key", "secret-key", "bucket"];

pub(crate) fn s3(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let gaps = missing(data, &REQUIRED);
    if !gaps.is_empty() {
        return Err(invalid(ctx, format!("missing {}", gaps.join(", "))));
    }
    let uri_style = get_any(data, &["uri-style", "s3-uri-style"]);
    let addressing_style =
        get(data, "addressing-style")
            .or(uri_style)
            .map(|s| if s == "host" { "virtual" } else { s });
    let attributes = get(data, "attributes")
        .map(json_list)
        .transpose()
        .map_err(|e| invalid(ctx, format!("attributes: {e}")))?;
    let ca_chain = get(data, "tls-ca-chain")
        .map(json_list)
        .transpose()
        .map_err(|e| invalid(ctx, format!("tls-ca-chain: {e}")))?;

    let mut b = EnvBuilder::default();
    b.set_secret_opt("S3_ACCESS_KEY", get(data, "access-key"));
    b.set_secret_opt("S3_SECRET_KEY", get(data, "secret-key"));
    b.set_opt("S3_REGION", get(data, "region"));
    b.set_opt("S3_STORAGE_CLASS", get(data, "storage-class"));
    b.set_opt("S3_BUCKET", get(data, "bucket"));
    b.set_opt("S3_ENDPOINT", get(data, "endpoint"));
    b.set_opt("S3_PATH", get(data, "path"));
    b.set_opt(
        "S3_API_VERSION",
        get_any(data, &["api-version", "s3-api-version"]),
    );
    b.set_opt("S3_URI_STYLE", uri_style);
    b.set_opt("S3_ADDRESSING_STYLE", addressing_style);
    b.set_opt(
        "S3_ATTRIBUTES",
        attributes
            .filter(|a| !a.is_empty())
            .map(|a| list_json(&a))
            .as_deref(),
    );
    // paas-charm emits the CA chain only when `attributes` is also set; twelve whenever given.
    b.set_opt(
        "S3_TLS_CA_CHAIN",
        ca_chain
            .filter(|c| !c.is_empty())
            .map(|c| list_json(&c))
            .as_deref(),
    );
    if is_spring(ctx) {
        b.set_secret_opt(
            "spring.cloud.aws.credentials.accessKey",
            get(data, "access-key"),
        );
        b.set_secret_opt(
            "spring.cloud.aws.credentials.secretKey",
            get(data, "secret-key"),
        );
        b.set_opt("spring.cloud.aws.s3.bucket", get(data, "bucket"));
        b.set_opt("spring.cloud.aws.region.static", get(data, "region"));
        b.set_opt("spring.cloud.aws.s3.endpoint", get(data, "endpoint"));
    }
    Ok(b.finish())
}

/// A JSON list of strings, as the provider sends it; any other text is a one-item list (so a
/// PEM or a single attribute can be given by hand).
pub(crate) fn json_list(value: &str) -> Result<Vec<String>, String> {
    if !value.trim_start().starts_with('[') {
        return Ok(vec![value.to_string()]);
    }
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|e| format!("not a JSON list: {e}"))?;
    let items = parsed.as_array().ok_or("not a JSON list")?;
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{i} is not a string"))
        })
        .collect()
}

fn list_json(items: &[String]) -> String {
    py_json(&serde_json::Value::Array(
        items
            .iter()
            .cloned()
            .map(serde_json::Value::String)
            .collect(),
    ))
}
