//! SAML (saml-integrator): the identity provider's entity id, metadata URL, single sign-on
//! redirect URL and signing certificate, and the Spring Security SAML2 properties.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use super::common::{get, invalid, is_spring, missing, EnvBuilder};

pub(crate) const REQUIRED: [&str; 2] = ["entity-id", "signing-certificate"];
const SPRING: &str = "spring.security.saml2.relyingparty.registration.testentity";

pub(crate) fn saml(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let gaps = missing(data, &REQUIRED);
    if !gaps.is_empty() {
        return Err(invalid(ctx, format!("missing {}", gaps.join(", "))));
    }
    let metadata_url = get(data, "metadata-url")
        .map(http_url)
        .transpose()
        .map_err(|e| invalid(ctx, format!("metadata-url: {e}")))?;
    let sso_url = get(data, "single-sign-on-redirect-url")
        .map(http_url)
        .transpose()
        .map_err(|e| invalid(ctx, format!("single-sign-on-redirect-url: {e}")))?;
    let mut b = EnvBuilder::default();
    b.set_opt("SAML_ENTITY_ID", get(data, "entity-id"));
    b.set_opt("SAML_METADATA_URL", metadata_url.as_deref());
    b.set_opt("SAML_SINGLE_SIGN_ON_REDIRECT_URL", sso_url.as_deref());
    b.set_opt("SAML_SIGNING_CERTIFICATE", get(data, "signing-certificate"));
    if is_spring(ctx) {
        b.set_opt(
            &format!("{SPRING}.assertingparty.metadata-uri"),
            metadata_url.as_deref(),
        );
        b.set_opt(&format!("{SPRING}.entity-id"), get(data, "entity-id"));
        b.set_opt(
            &format!("{SPRING}.assertingparty.singlesignin.url"),
            sso_url.as_deref(),
        );
        // The certificate itself is written to /app/saml.cert by the runtime.
        b.set(
            format!("{SPRING}.assertingparty.verification.credentials[0].certificate-location"),
            "file:/app/saml.cert",
        );
    }
    Ok(b.finish())
}

/// An http(s) URL in the form pydantic's `AnyHttpUrl` prints it (`https://idp` → `https://idp/`).
pub(crate) fn http_url(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value.trim()).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{value:?} is not an http(s) URL"));
    }
    Ok(url.to_string())
}
