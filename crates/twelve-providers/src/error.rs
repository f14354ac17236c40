use std::path::PathBuf;

/// Errors for people: each names the server (without passwords) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "`{binary}` not found (looked in {searched}): install it with `apt-get install {package}`, \
         or adopt an existing server with --external URL"
    )]
    MissingBinary {
        binary: String,
        package: String,
        searched: String,
    },

    #[error("cannot reach server: {server}: {reason}")]
    Unreachable { server: String, reason: String },

    #[error("{server}: the admin account lacks rights: {reason}")]
    NotAdmin { server: String, reason: String },

    #[error("{server}: {action} failed: {reason}")]
    Failed {
        server: String,
        action: String,
        reason: String,
    },

    #[error("{server} did not start: {reason} (log: {})", log.display())]
    StartFailed {
        server: String,
        reason: String,
        log: PathBuf,
    },

    #[error(
        "port {port} on 127.0.0.1 is already in use by another program: choose another port for the managed {kind}"
    )]
    PortInUse { kind: String, port: u16 },

    #[error("{what} is not supported: {hint}")]
    Unsupported { what: String, hint: String },

    #[error("invalid {kind} admin URL `{url}`: {reason}")]
    InvalidUrl {
        kind: String,
        url: String,
        reason: String,
    },

    #[error(
        "invalid app name `{app}`: use lower-case letters, digits and dashes, starting with a letter, at most 48 characters"
    )]
    InvalidAppName { app: String },

    #[error("{path}: {reason}", path = path.display())]
    Io { path: PathBuf, reason: String },
}

impl ProviderError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: std::io::Error) -> ProviderError {
        ProviderError::Io {
            path: path.into(),
            reason: e.to_string(),
        }
    }
}
