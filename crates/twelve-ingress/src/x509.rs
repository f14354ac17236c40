//! The few facts the ingress and the controller need from an X.509 certificate: the names
//! it serves (subject alternative names, else the subject's common name), its validity
//! period and its issuer's name. A minimal DER reader, not a validator: rustls checks
//! that the key matches, clients check the chain.

/// What [`parse`] reads from a DER certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names, lowercased (`*.example.com` stays as is).
    pub names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The issuer's common name (else organization), or the empty string.
    pub issuer: String,
}

struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Der<'a> {
        Der { rest: bytes }
    }

    /// The next element: its tag and contents.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.rest.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (contents, rest) = rest.split_at(len);
        self.rest = rest;
        Some((tag, contents))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, contents) if t == tag => Some(contents),
            _ => None,
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// Reads a DER-encoded certificate; `None` when it is not one.
pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let cert = Der::new(der).expect(SEQUENCE)?;
    let mut tbs = Der::new(Der::new(cert).expect(SEQUENCE)?);
    let mut field = tbs.next()?;
    if field.0 == 0xa0 {
        field = tbs.next()?; // version, then the serial number
    }
    if field.0 != 0x02 {
        return None;
    }
    tbs.expect(SEQUENCE)?; // signature algorithm
    let issuer = tbs.expect(SEQUENCE)?;
    let mut validity = Der::new(tbs.expect(SEQUENCE)?);
    let not_before = time(validity.next()?)?;
    let not_after = time(validity.next()?)?;
    let subject = tbs.expect(SEQUENCE)?;
    tbs.expect(SEQUENCE)?; // public key
    let mut names = Vec::new();
    while let Some((tag, contents)) = tbs.next() {
        if tag != 0xa3 {
            continue;
        }
        let mut exts = Der::new(Der::new(contents).expect(SEQUENCE)?);
        while let Some(ext) = exts.expect(SEQUENCE) {
            let mut ext = Der::new(ext);
            if ext.expect(0x06)? != OID_SAN {
                continue;
            }
            let mut value = ext.next()?;
            if value.0 == 0x01 {
                value = ext.next()?; // critical
            }
            let mut sans = Der::new(Der::new(value.1).expect(SEQUENCE)?);
            while let Some((tag, name)) = sans.next() {
                if tag == 0x82 {
                    names.push(String::from_utf8_lossy(name).to_ascii_lowercase());
                }
            }
        }
    }
    if names.is_empty() {
        names.extend(name_attr(subject, OID_CN).map(|n| n.to_ascii_lowercase()));
    }
    let issuer = name_attr(issuer, OID_CN)
        .or_else(|| name_attr(issuer, OID_O))
        .unwrap_or_default();
    Some(CertInfo {
        names,
        not_before,
        not_after,
        issuer,
    })
}

/// The first attribute `oid` of a distinguished name.
fn name_attr(name: &[u8], oid: &[u8]) -> Option<String> {
    let mut rdns = Der::new(name);
    while let Some(rdn) = rdns.expect(SET) {
        let mut atvs = Der::new(rdn);
        while let Some(atv) = atvs.expect(SEQUENCE) {
            let mut atv = Der::new(atv);
            if atv.expect(0x06)? == oid {
                return Some(String::from_utf8_lossy(atv.next()?.1).into_owned());
            }
        }
    }
    None
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time((tag, s): (u8, &[u8])) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        0x18 if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let n = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    Some(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Whether certificate name `pattern` covers `host` (a wildcard covers one label).
pub fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(time((0x17, b"000301000000Z")), Some(951868800));
        assert_eq!(time((0x18, b"20500101000000Z")), Some(2524608000));
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("example.com", "example.com"));
    }
}
