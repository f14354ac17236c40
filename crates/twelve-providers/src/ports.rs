//! Ports for the processes twelve starts (units, metrics and statsd exporters, managed
//! servers): free, and outside the kernel's ephemeral range.
//!
//! A port the kernel hands out for `bind(port 0)` comes from the same range it picks the
//! source ports of outgoing connections from. Between the moment twelve chooses such a port
//! and the moment the process binds it (or while the process restarts), any outgoing
//! connection on the machine can take it as its source port, and a long-lived one (a
//! database pool, a broker link) keeps it: the unit then fails with "Address already in
//! use" at every restart. Ports below (or above) that range are never used as source ports.
//!
//! `TWELVE_PORT_RANGE=LOW-HIGH` sets the range; by default the larger side of the
//! kernel's `ip_local_port_range` (10000..low-1 on a stock Linux: 10000-32767).

use std::io;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;

use rand::Rng;

/// The lowest port twelve hands out by default (well-known services live below).
const FLOOR: u16 = 10000;
/// A range smaller than this is not worth using: the kernel's own choice is then taken.
const MIN_SPAN: u32 = 1000;

/// A free TCP port (nothing listens on 127.0.0.1 or the wildcard), not in `taken`.
pub fn free_tcp_port(taken: &[u16]) -> io::Result<u16> {
    pick(taken, false)
}

/// A port free for TCP and for UDP (a statsd exporter listens on both), not in `taken`.
pub fn free_tcp_udp_port(taken: &[u16]) -> io::Result<u16> {
    pick(taken, true)
}

fn pick(taken: &[u16], udp: bool) -> io::Result<u16> {
    let free = |port: u16| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && (!udp || UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
    };
    match range()? {
        Some(range) => {
            let mut rng = rand::rng();
            for _ in 0..500 {
                let port = rng.random_range(range.clone());
                if !taken.contains(&port) && free(port) {
                    return Ok(port);
                }
            }
            Err(io::Error::other(format!(
                "no free port left in {}-{} (set TWELVE_PORT_RANGE to a wider range)",
                range.start(),
                range.end()
            )))
        }
        // No room outside the ephemeral range: the kernel's choice, as a last resort.
        None => {
            for _ in 0..100 {
                let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                    .local_addr()?
                    .port();
                if !taken.contains(&port) && (!udp || free(port)) {
                    return Ok(port);
                }
            }
            Err(io::Error::other("no free port left"))
        }
    }
}

/// The range to pick from: `TWELVE_PORT_RANGE`, or the larger side of the kernel's
/// ephemeral range; `None` when neither side has room.
fn range() -> io::Result<Option<RangeInclusive<u16>>> {
    if let Ok(value) = std::env::var("TWELVE_PORT_RANGE") {
        return parse_range(&value).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TWELVE_PORT_RANGE={value:?}: {e} (expected LOW-HIGH, e.g. 20000-29999)"),
            )
        });
    }
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    Ok(outside(ephemeral))
}

/// The larger side of `ephemeral` (low, high) from FLOOR to 65535, if it has room.
fn outside(ephemeral: Option<(u16, u16)>) -> Option<RangeInclusive<u16>> {
    let (low, high) = ephemeral.unwrap_or((32768, 60999));
    let below = (low > FLOOR).then(|| FLOOR..=low - 1);
    let above = (high < u16::MAX).then(|| high.max(FLOOR - 1) + 1..=u16::MAX);
    let span = |r: &RangeInclusive<u16>| u32::from(*r.end()) - u32::from(*r.start()) + 1;
    [below, above]
        .into_iter()
        .flatten()
        .filter(|r| span(r) >= MIN_SPAN)
        .max_by_key(span)
}

fn parse_range(value: &str) -> Result<RangeInclusive<u16>, String> {
    let (low, high) = value
        .split_once('-')
        .ok_or_else(|| "no '-' between the two ports".to_string())?;
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p >= 1024)
            .ok_or_else(|| format!("{:?} is not a port from 1024 to 65535", s.trim()))
    };
    let (low, high) = (port(low)?, port(high)?);
    if high < low {
        return Err(format!("{high} is below {low}"));
    }
    Ok(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_range_avoids_the_kernels_ephemeral_ports() {
        assert_eq!(outside(Some((32768, 60999))), Some(10000..=32767));
        assert_eq!(outside(None), Some(10000..=32767));
        // A kernel whose ephemeral range starts low: the ports above it.
        assert_eq!(outside(Some((1024, 50000))), Some(50001..=65535));
        // No room on either side: the kernel's choice.
        assert_eq!(outside(Some((1024, 65000))), None);
    }

    #[test]
    fn a_port_range_from_the_environment_is_checked() {
        assert_eq!(parse_range("20000-29999"), Ok(20000..=29999));
        assert!(parse_range("20000").unwrap_err().contains("'-'"));
        assert!(parse_range("80-90").unwrap_err().contains("\"80\""));
        assert!(parse_range("30000-20000").unwrap_err().contains("below"));
    }

    #[test]
    fn a_picked_port_is_free_outside_the_ephemeral_range_and_not_taken() {
        let eph = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let low: u16 = eph.split_whitespace().next().unwrap().parse().unwrap();
        let mut taken = Vec::new();
        for _ in 0..50 {
            let port = free_tcp_udp_port(&taken).unwrap();
            assert!(port < low, "{port} is in the ephemeral range from {low}");
            assert!(!taken.contains(&port));
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
            taken.push(port);
        }
        // A port something listens on is never handed out.
        let held: Vec<TcpListener> = (0..20)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, free_tcp_port(&[]).unwrap())).unwrap())
            .collect();
        let held_ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        for _ in 0..200 {
            assert!(!held_ports.contains(&free_tcp_port(&[]).unwrap()));
        }
    }
}
