//! The environment each integration's relation data gives the app: paas-charm 1.x's variables
//! (reference/paas-charm.md §2) with no prefix, and for Spring Boot the Spring properties as
//! well. One submodule per integration family; docs/integrations.md has the tables.

use super::*;

mod common;
mod databases;
mod http_proxy;
mod kafka;
mod keys;
mod oauth;
mod openfga;
mod rabbitmq;
mod s3;
mod saml;
mod smtp;
mod tracing;
mod urlparse;

pub use keys::validate_data;
pub use oauth::oauth_options;

/// The env entries (and the values to hide) one integration's data gives the app.
///
/// `Invalid` is for data a provider sent wrong (paas-charm's "Invalid <ep> relation data."),
/// `Unusable` for data that is not complete yet ("... is either unavailable, invalid or not
/// usable."). Keys a kind does not use are ignored here; `validate_data` refuses them.
pub fn integration_env(
    kind: IntegrationKind,
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    use IntegrationKind::*;
    match kind {
        Postgresql | Mysql | Mongodb => databases::sql_or_mongo(kind, ctx, data),
        Redis => databases::redis(ctx, data),
        Valkey => databases::valkey(ctx, data),
        Rabbitmq => rabbitmq::rabbitmq(ctx, data),
        S3 => s3::s3(ctx, data),
        Saml => saml::saml(ctx, data),
        Tracing => tracing::tracing(ctx, data),
        Smtp => smtp::smtp(ctx, data),
        Openfga => openfga::openfga(ctx, data),
        Kafka => kafka::kafka(ctx, data),
        Oauth => oauth::oauth(ctx, data),
        HttpProxy => http_proxy::http_proxy(ctx, data),
        // Forwarding happens in the unit's layer (`log_targets`), not in the environment.
        Logging => match common::get(data, "url") {
            Some(_) => Ok(IntegrationEnv::default()),
            None => Err(common::unusable(ctx, "no Loki push URL yet")),
        },
    }
}
