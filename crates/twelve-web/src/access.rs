//! Who may use the server.
//!
//! A browser sends, as `Host`, the name it resolved. A page of another site that rebinds
//! its own name to 127.0.0.1 (DNS rebinding) can make the browser connect here, but the
//! `Host` it sends is still that site's name: so requests are answered only when `Host`
//! names the loopback interface (`localhost`, `127.0.0.1`, `[::1]`, any port), or when they
//! carry the server's token (`Authorization: Bearer`, the cookie, or `?token=`), which
//! `twelve dashboard --token` prints. Anything else gets 403.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie a `?token=` request sets.
pub const TOKEN_COOKIE: &str = "twelve_token";

/// The access rule of a server: loopback `Host`s always, any `Host` with the token.
#[derive(Clone, Default)]
pub struct Access {
    token: Option<Arc<str>>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = self.token.as_ref().map(|_| "<redacted>");
        f.debug_struct("Access").field("token", &token).finish()
    }
}

impl Access {
    /// Only requests whose `Host` is a loopback name.
    pub fn local_only() -> Access {
        Access { token: None }
    }

    /// Loopback `Host`s, and any request that carries `token`.
    pub fn with_token(token: impl Into<String>) -> Access {
        let token: String = token.into();
        Access {
            token: Some(token.into()).filter(|t: &Arc<str>| !t.is_empty()),
        }
    }

    fn is_token(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| same(t.as_bytes(), given.as_bytes()))
    }

    fn verdict(&self, headers: &HeaderMap, uri: &axum::http::Uri) -> Verdict {
        if self.token.is_some() {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if bearer.is_some_and(|t| self.is_token(t.trim())) {
                return Verdict::Allow;
            }
            let cookie = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .any(|(k, v)| k == TOKEN_COOKIE && self.is_token(v));
            if cookie {
                return Verdict::Allow;
            }
            let query = uri.query().unwrap_or("");
            let given = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .any(|(k, v)| k == "token" && self.is_token(v));
            if given {
                let rest: Vec<&str> = query
                    .split('&')
                    .filter(|kv| !kv.starts_with("token=") && !kv.is_empty())
                    .collect();
                let mut location = uri.path().to_string();
                if !rest.is_empty() {
                    location.push('?');
                    location.push_str(&rest.join("&"));
                }
                return Verdict::SetCookie { location };
            }
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()));
        if host.is_some_and(is_loopback_host) {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }

    fn cookie(&self) -> Option<HeaderValue> {
        let t = self.token.as_deref()?;
        HeaderValue::from_str(&format!(
            "{TOKEN_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict"
        ))
        .ok()
    }
}

enum Verdict {
    Allow,
    /// The token came in the query: set the cookie; a page is sent to `location` (the same
    /// URL without the token), so that the token stays out of the history.
    SetCookie {
        location: String,
    },
    Deny,
}

/// Whether `host` (a `Host` header: name, optional port) names the loopback interface:
/// `localhost`, `127.0.0.1` or `[::1]`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) => (&host[..ip.len() + 2], port),
            None => return false,
        },
        None => match host.find(':') {
            Some(colon) => host.split_at(colon),
            None => (host, ""),
        },
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    port_ok && (name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]")
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    match access.verdict(req.headers(), req.uri()) {
        Verdict::Allow => next.run(req).await,
        Verdict::SetCookie { location } => {
            let page = req.method() == axum::http::Method::GET && req.uri().path() == "/";
            let mut resp = if page {
                (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, location),
                        (header::CACHE_CONTROL, "no-store".into()),
                    ],
                )
                    .into_response()
            } else {
                next.run(req).await
            };
            if let Some(c) = access.cookie() {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
        Verdict::Deny => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "403 Forbidden: twelve's web server answers requests for localhost, 127.0.0.1 \
             or [::1] only; from another name or machine, open the URL that \
             `twelve dashboard --token` prints, or send its token as \
             `Authorization: Bearer TOKEN`\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LocalHost:9180",
            "127.0.0.1",
            "127.0.0.1:9180",
            "[::1]",
            "[::1]:9180",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:9180",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "localhost:",
            "localhost:9180:1",
            "localhost:x",
            "[::1]x",
            "[::1",
            "::1",
            "127.0.0.2",
            "0.0.0.0:9180",
            "localhost@evil.example",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn the_token_is_never_shown() {
        let a = Access::with_token("s3cr3t-token");
        assert!(!format!("{a:?}").contains("s3cr3t"));
    }
}
