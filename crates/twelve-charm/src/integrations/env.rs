//! Placeholder: filled in by the integrations work.

use super::*;

pub fn integration_env(
    _kind: IntegrationKind,
    _ctx: &IntegrationContext<'_>,
    _data: &RelationData,
) -> Result<IntegrationEnv, RelationDataError> {
    Ok(IntegrationEnv::default())
}

pub fn validate_data(_kind: IntegrationKind, _data: &RelationData) -> Result<(), String> {
    Ok(())
}

pub fn oauth_options(_framework: Framework, _endpoint: &str) -> Vec<(String, twelve_project::ConfigOption)> {
    vec![]
}
