//! URL splitting with the rules of Python's `urllib.parse.urlparse`, which paas-charm uses to
//! derive `*_SCHEME`, `*_NETLOC`, ... from a connection string. Empty components are `""`
//! (kept), absent user/password/host/port are `None` (dropped), as there.

use percent_encoding::{
    percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC,
};

use super::common::{parse_port, EnvBuilder};

/// Schemes whose last path segment may carry `;params` (Python's `uses_params`).
const USES_PARAMS: [&str; 16] = [
    "", "ftp", "hdl", "prospero", "http", "imap", "https", "shttp", "rtsp", "rtsps", "rtspu",
    "sip", "sips", "mms", "sftp", "tel",
];

/// The six components of `urlparse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedUrl {
    pub scheme: String,
    pub netloc: String,
    pub path: String,
    pub params: String,
    pub query: String,
    pub fragment: String,
}

impl ParsedUrl {
    pub(crate) fn parse(url: &str) -> Result<ParsedUrl, String> {
        let cleaned: String = url
            .trim_start_matches(|c: char| c <= ' ')
            .chars()
            .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
            .collect();
        let mut rest = cleaned.as_str();
        let mut scheme = String::new();
        if let Some(i) = rest.find(':') {
            let head = &rest[..i];
            let valid = head.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && head
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if valid {
                scheme = head.to_ascii_lowercase();
                rest = &rest[i + 1..];
            }
        }
        let mut netloc = "";
        if let Some(after) = rest.strip_prefix("//") {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            netloc = &after[..end];
            rest = &after[end..];
            if netloc.contains('[') != netloc.contains(']') {
                return Err("Invalid IPv6 URL".into());
            }
        }
        let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (mut path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut params = "";
        if USES_PARAMS.contains(&scheme.as_str()) && path.contains(';') {
            let from = path.rfind('/').unwrap_or(0);
            if let Some(i) = path[from..].find(';').map(|i| i + from) {
                params = &path[i + 1..];
                path = &path[..i];
            }
        }
        Ok(ParsedUrl {
            scheme,
            netloc: netloc.to_string(),
            path: path.to_string(),
            params: params.to_string(),
            query: query.to_string(),
            fragment: fragment.to_string(),
        })
    }

    fn userinfo(&self) -> Option<&str> {
        self.netloc.rsplit_once('@').map(|(u, _)| u)
    }

    fn hostinfo(&self) -> (&str, Option<&str>) {
        let hostinfo = self
            .netloc
            .rsplit_once('@')
            .map_or(self.netloc.as_str(), |(_, h)| h);
        let (host, port) = match hostinfo.split_once('[') {
            Some((_, bracketed)) => {
                let (host, after) = bracketed.split_once(']').unwrap_or((bracketed, ""));
                (host, after.split_once(':').map(|(_, p)| p))
            }
            None => match hostinfo.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostinfo, None),
            },
        };
        (host, port.filter(|p| !p.is_empty()))
    }

    /// The user as written in the URL, percent-decoded.
    pub(crate) fn username(&self) -> Option<String> {
        self.userinfo()
            .map(|u| decode(u.split_once(':').map_or(u, |(n, _)| n)))
    }

    /// The password as written in the URL, percent-decoded.
    pub(crate) fn password(&self) -> Option<String> {
        self.userinfo()
            .and_then(|u| u.split_once(':'))
            .map(|(_, p)| decode(p))
    }

    /// The (first) host, lower-cased.
    pub(crate) fn hostname(&self) -> Option<String> {
        let (host, _) = self.hostinfo();
        if host.is_empty() {
            return None;
        }
        let host = host.split(',').next().unwrap_or(host);
        Some(match host.split_once('%') {
            Some((h, zone)) => format!("{}%{zone}", h.to_lowercase()),
            None => host.to_lowercase(),
        })
    }

    /// The port of the (first) host. A multi-host netloc (`h1:1,h2:2`, as MongoDB sends)
    /// gives the first host's port, where Python's `urlparse` raises.
    pub(crate) fn port(&self) -> Result<Option<u16>, String> {
        let Some(raw) = self.hostinfo().1 else {
            return Ok(None);
        };
        let first = raw.split(',').next().unwrap_or(raw);
        parse_port(first)
            .map(Some)
            .ok_or_else(|| format!("port {raw:?} is not a number from 0 to 65535"))
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Characters that cannot stand as-is in the user or password part of a URL.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Percent-encodes a user name or password for a URL (a no-op for generated credentials).
pub(crate) fn encode_userinfo(s: &str) -> String {
    utf8_percent_encode(s, USERINFO).to_string()
}

/// Python's `urllib.parse.quote(s, safe="")`.
pub(crate) fn quote_all(s: &str) -> String {
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'.')
        .remove(b'-')
        .remove(b'~');
    utf8_percent_encode(s, SET).to_string()
}

/// `<P>_CONNECT_STRING` and the split fields (paas-charm's `_url_env_vars`). A URL with a
/// password is secret, as are its netloc and the password itself.
pub(crate) fn url_env_vars(
    b: &mut EnvBuilder,
    prefix: &str,
    url: &str,
) -> Result<ParsedUrl, String> {
    let parsed = ParsedUrl::parse(url)?;
    let port = parsed.port()?;
    let password = parsed.password();
    if let Some(p) = &password {
        b.secret(p);
        b.secret(url);
        b.secret(&parsed.netloc);
    }
    b.set(format!("{prefix}_CONNECT_STRING"), url);
    b.set(format!("{prefix}_SCHEME"), parsed.scheme.as_str());
    b.set(format!("{prefix}_NETLOC"), parsed.netloc.as_str());
    b.set(format!("{prefix}_PATH"), parsed.path.as_str());
    b.set(format!("{prefix}_PARAMS"), parsed.params.as_str());
    b.set(format!("{prefix}_QUERY"), parsed.query.as_str());
    b.set(format!("{prefix}_FRAGMENT"), parsed.fragment.as_str());
    if let Some(u) = parsed.username() {
        b.set(format!("{prefix}_USERNAME"), u);
    }
    if let Some(p) = password {
        b.set(format!("{prefix}_PASSWORD"), p);
    }
    if let Some(h) = parsed.hostname() {
        b.set(format!("{prefix}_HOSTNAME"), h);
    }
    if let Some(p) = port {
        b.set(format!("{prefix}_PORT"), p.to_string());
    }
    Ok(parsed)
}

/// `<P>_DB_*` and `<P>_DB_NAME` (the path without its leading `/`, when there is a path).
pub(crate) fn db_url_env_vars(
    b: &mut EnvBuilder,
    prefix: &str,
    url: &str,
) -> Result<ParsedUrl, String> {
    let db_prefix = format!("{prefix}_DB");
    let parsed = url_env_vars(b, &db_prefix, url)?;
    if !parsed.path.is_empty() {
        b.set(
            format!("{db_prefix}_NAME"),
            parsed.path.strip_prefix('/').unwrap_or(&parsed.path),
        );
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_python() {
        let p = ParsedUrl::parse("postgresql://u:p%40ss@Host:5432/db?sslmode=require#f").unwrap();
        assert_eq!(p.scheme, "postgresql");
        assert_eq!(p.netloc, "u:p%40ss@Host:5432");
        assert_eq!(p.path, "/db");
        assert_eq!(p.query, "sslmode=require");
        assert_eq!(p.fragment, "f");
        assert_eq!(p.username().as_deref(), Some("u"));
        assert_eq!(p.password().as_deref(), Some("p@ss"));
        assert_eq!(p.hostname().as_deref(), Some("host"));
        assert_eq!(p.port(), Ok(Some(5432)));
    }

    #[test]
    fn params_only_for_http_like_schemes() {
        assert_eq!(ParsedUrl::parse("http://h/a;b").unwrap().params, "b");
        assert_eq!(ParsedUrl::parse("postgresql://h/a;b").unwrap().path, "/a;b");
    }

    #[test]
    fn ipv6_and_bad_ports() {
        let p = ParsedUrl::parse("redis://[::1]:6379").unwrap();
        assert_eq!(p.hostname().as_deref(), Some("::1"));
        assert_eq!(p.port(), Ok(Some(6379)));
        assert!(ParsedUrl::parse("redis://h:None").unwrap().port().is_err());
        assert!(ParsedUrl::parse("redis://[::1:6379").is_err());
    }
}
