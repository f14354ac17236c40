//! OAuth / OIDC (hydra `oauth` interface) on any one endpoint of interface `oauth`: the client
//! and the provider's URLs as `<P>_<EP>_*`, the Spring Security OAuth2 client properties, and
//! the config options paas-charm adds per endpoint.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use super::common::{get, invalid, is_spring, missing, py_json, EnvBuilder};
use twelve_project::{ConfigOption, Framework, OptionType};

pub(crate) const REQUIRED: [&str; 7] = [
    "client-id",
    "client-secret",
    "issuer-url",
    "authorization-endpoint",
    "token-endpoint",
    "userinfo-endpoint",
    "jwks-endpoint",
];
pub(crate) const DEFAULT_SCOPES: &str = "openid profile email";
pub(crate) const OPENID_REQUIRED: &str =
    "The 'openid' scope is required for OAuth integration, please add it to the scopes.";

fn default_redirect_path(framework: Framework, endpoint: &str) -> String {
    match framework {
        Framework::SpringBoot => format!("/login/oauth2/code/{endpoint}"),
        _ => "/callback".to_string(),
    }
}

fn config_str(ctx: &IntegrationContext<'_>, option: &str) -> Option<String> {
    match ctx.config.get(option)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

pub(crate) fn oauth(
    ctx: &IntegrationContext<'_>,
    data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    let ep = ctx.endpoint;
    let scopes =
        config_str(ctx, &format!("{ep}-scopes")).unwrap_or_else(|| DEFAULT_SCOPES.to_string());
    if !scopes.split_whitespace().any(|s| s == "openid") {
        return Err(invalid(ctx, OPENID_REQUIRED));
    }
    let gaps = missing(data, &REQUIRED);
    if !gaps.is_empty() {
        return Err(invalid(ctx, format!("missing {}", gaps.join(", "))));
    }
    let mut b = EnvBuilder::default();
    let prefix = match ctx.framework {
        Framework::Flask => "FLASK",
        Framework::Django => "DJANGO",
        _ => "APP",
    };
    let p = format!("{prefix}_{}", ep.to_uppercase());
    b.set_opt(&format!("{p}_CLIENT_ID"), get(data, "client-id"));
    b.set_secret_opt(&format!("{p}_CLIENT_SECRET"), get(data, "client-secret"));
    b.set_opt(&format!("{p}_API_BASE_URL"), get(data, "issuer-url"));
    b.set_opt(
        &format!("{p}_AUTHORIZE_URL"),
        get(data, "authorization-endpoint"),
    );
    b.set_opt(
        &format!("{p}_ACCESS_TOKEN_URL"),
        get(data, "token-endpoint"),
    );
    b.set_opt(&format!("{p}_USER_URL"), get(data, "userinfo-endpoint"));
    b.set(
        format!("{p}_CLIENT_KWARGS"),
        py_json(&serde_json::json!({ "scope": scopes })),
    );
    b.set_opt(&format!("{p}_JWKS_URL"), get(data, "jwks-endpoint"));
    if is_spring(ctx) {
        let redirect_path = config_str(ctx, &format!("{ep}-redirect-path"))
            .unwrap_or_else(|| default_redirect_path(ctx.framework, ep));
        let redirect_uri = format!(
            "{}/{}",
            ctx.base_url.trim_end_matches('/'),
            redirect_path.trim_start_matches('/')
        );
        let user_attr = config_str(ctx, &format!("{ep}-user-name-attribute"))
            .unwrap_or_else(|| "sub".to_string());
        let reg = format!("spring.security.oauth2.client.registration.{ep}");
        let prov = format!("spring.security.oauth2.client.provider.{ep}");
        b.set_opt(&format!("{reg}.client-id"), get(data, "client-id"));
        b.set_secret_opt(&format!("{reg}.client-secret"), get(data, "client-secret"));
        b.set(format!("{reg}.redirect-uri"), redirect_uri);
        b.set(
            format!("{reg}.scope"),
            scopes.split_whitespace().collect::<Vec<_>>().join(","),
        );
        b.set(format!("{reg}.user-name-attribute"), user_attr.as_str());
        b.set_opt(
            &format!("{prov}.authorization-uri"),
            get(data, "authorization-endpoint"),
        );
        b.set_opt(&format!("{prov}.issuer-uri"), get(data, "issuer-url"));
        b.set_opt(&format!("{prov}.jwk-set-uri"), get(data, "jwks-endpoint"));
        b.set_opt(&format!("{prov}.token-uri"), get(data, "token-endpoint"));
        b.set_opt(
            &format!("{prov}.user-info-uri"),
            get(data, "userinfo-endpoint"),
        );
        b.set(format!("{prov}.user-name-attribute"), user_attr);
        b.set(
            format!("{reg}.authorization-grant-type"),
            "authorization_code",
        );
    }
    Ok(b.finish())
}

/// The options paas-charm adds for an oauth endpoint: `<ep>-redirect-path`, `<ep>-scopes`, and
/// for Spring Boot `<ep>-user-name-attribute`.
pub fn oauth_options(framework: Framework, endpoint: &str) -> Vec<(String, ConfigOption)> {
    let string = |default: String, description: String| ConfigOption {
        type_: OptionType::String,
        default: Some(serde_json::Value::String(default)),
        description: Some(description),
        optional: None,
        location: None,
    };
    let mut options = vec![
        (
            format!("{endpoint}-redirect-path"),
            string(
                default_redirect_path(framework, endpoint),
                format!("The path of the app's OAuth callback for the {endpoint} integration, appended to the base URL."),
            ),
        ),
        (
            format!("{endpoint}-scopes"),
            string(
                DEFAULT_SCOPES.to_string(),
                format!("Space-separated OAuth scopes to request on the {endpoint} integration; must include openid."),
            ),
        ),
    ];
    if framework == Framework::SpringBoot {
        options.push((
            format!("{endpoint}-user-name-attribute"),
            string(
                "sub".to_string(),
                format!("The claim that names the user for the {endpoint} integration."),
            ),
        ));
    }
    options
}
