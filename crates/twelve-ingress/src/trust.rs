//! Whether a backend's Unix socket is the app's own. A socket path is only a name: any
//! process that can write its directory can put its own server there and receive the app's
//! requests and cookies. The ingress uses a unit's socket only when
//!
//! - the server on the other end (its `SO_PEERCRED`, the credentials of the process that
//!   called `listen`) runs as the backend's `socket_uid`, or as the ingress's own effective
//!   uid when the route names none; checked on every new connection, before a byte is sent;
//! - the socket's directory is owned by root or by that uid and is not writable by group or
//!   others (checked at most once a second per backend).
//!
//! Otherwise the request goes over TCP, the refusal is logged once per backend, and the
//! socket is not tried again for a second (no wasted connect per request meanwhile).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// How long a verdict on the directory holds, and how long a refused socket is skipped.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64 + 1
}

/// The effective uid of the ingress.
pub(crate) fn own_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// A backend's Unix socket and what its server must be.
#[derive(Debug)]
pub(crate) struct UnixBackend {
    pub path: PathBuf,
    /// The uid the server on the socket must run as.
    pub uid: u32,
    /// The unit, for the log line.
    unit: String,
    /// Until when (ms) the directory was found right.
    dir_ok_until: AtomicU64,
    /// Until when (ms) the socket is not tried, after a refusal.
    skip_until: AtomicU64,
    logged: AtomicBool,
}

impl UnixBackend {
    pub(crate) fn new(unit: &str, path: PathBuf, socket_uid: Option<u32>) -> UnixBackend {
        UnixBackend {
            path,
            uid: socket_uid.unwrap_or_else(own_uid),
            unit: unit.to_string(),
            dir_ok_until: AtomicU64::new(0),
            skip_until: AtomicU64::new(0),
            logged: AtomicBool::new(false),
        }
    }

    /// Whether to try the socket now (not refused within the last [`RECHECK`]).
    pub(crate) fn worth_trying(&self) -> bool {
        let until = self.skip_until.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// Checks a connected socket's server (`peer_uid`) and the socket's directory.
    /// `Err` says why it is not trusted; the caller goes to TCP.
    pub(crate) fn check(&self, peer_uid: u32) -> Result<(), String> {
        if peer_uid != self.uid {
            return Err(format!(
                "its server runs as uid {peer_uid}, not {}",
                self.uid
            ));
        }
        let now = now_ms();
        if self.dir_ok_until.load(Ordering::Relaxed) > now {
            return Ok(());
        }
        check_dir(&self.path, self.uid)?;
        self.dir_ok_until
            .store(now + RECHECK.as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Skips the socket for [`RECHECK`] and logs why, the first time.
    pub(crate) fn refuse(&self, why: &str, tcp: std::net::SocketAddr) {
        self.skip_until
            .store(now_ms() + RECHECK.as_millis() as u64, Ordering::Relaxed);
        self.dir_ok_until.store(0, Ordering::Relaxed);
        if !self.logged.swap(true, Ordering::Relaxed) {
            eprintln!(
                "twelve ingress: {}: not using socket {}: {why}; requests go to {tcp} \
                 (logged once per backend)",
                self.unit,
                self.path.display()
            );
        }
    }
}

/// The socket's directory must be owned by root or `uid` and writable by its owner alone.
fn check_dir(socket: &Path, uid: u32) -> Result<(), String> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if meta.uid() != 0 && meta.uid() != uid {
        return Err(format!(
            "its directory {} is owned by uid {}, not root or {uid}",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "its directory {} is writable by group or others (mode {:o})",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// A TCP backend whose route names a `socket_uid`: the socket listening on its address
/// must be that uid's, so that another app cannot take over the port while the unit
/// restarts. Checked with `NETLINK_SOCK_DIAG` (the kernel's list of listening sockets and
/// their owners), at most once a second per backend.
#[derive(Debug)]
pub(crate) struct TcpBackend {
    pub uid: u32,
    unit: String,
    /// Until when (ms) the listener was found to be `uid`'s.
    ok_until: AtomicU64,
    /// Until when (ms) the backend is refused, after a foreign listener was found.
    refused_until: AtomicU64,
    logged: AtomicBool,
}

impl TcpBackend {
    pub(crate) fn new(unit: &str, uid: u32) -> TcpBackend {
        TcpBackend {
            uid,
            unit: unit.to_string(),
            ok_until: AtomicU64::new(0),
            refused_until: AtomicU64::new(0),
            logged: AtomicBool::new(false),
        }
    }

    /// `Err` when the socket listening on `addr` is another uid's (within the last
    /// [`RECHECK`]). Nothing listening, or a check that cannot be made, is not a refusal:
    /// the connect says what there is.
    pub(crate) fn check(&self, addr: std::net::SocketAddr) -> Result<(), String> {
        let now = now_ms();
        if self.ok_until.load(Ordering::Relaxed) > now {
            return Ok(());
        }
        if self.refused_until.load(Ordering::Relaxed) > now {
            return Err(format!("the port is not {}'s", self.unit));
        }
        let owners = match listener_uids(addr) {
            Ok(owners) => owners,
            Err(_) => return Ok(()),
        };
        let recheck = now + RECHECK.as_millis() as u64;
        match owners.iter().find(|&&uid| uid != self.uid) {
            None => {
                if !owners.is_empty() {
                    self.ok_until.store(recheck, Ordering::Relaxed);
                }
                Ok(())
            }
            Some(&other) => {
                self.refused_until.store(recheck, Ordering::Relaxed);
                let why = format!(
                    "the socket listening on {addr} belongs to uid {other}, not {}",
                    self.uid
                );
                if !self.logged.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "twelve ingress: {}: not connecting: {why} (logged once per backend)",
                        self.unit
                    );
                }
                Err(why)
            }
        }
    }
}

/// The uids of the TCP sockets listening where a connection to `addr` could land: the same
/// port on its address or on a wildcard address (IPv4 and IPv6, dual-stack included).
pub fn listener_uids(addr: std::net::SocketAddr) -> std::io::Result<Vec<u32>> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut uids = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        for (ip, port, uid) in listening(family)? {
            if port != addr.port() {
                continue;
            }
            let covers = match (addr.ip(), ip) {
                (_, IpAddr::V4(l)) if l == Ipv4Addr::UNSPECIFIED => addr.is_ipv4(),
                (_, IpAddr::V6(l)) if l == Ipv6Addr::UNSPECIFIED => true,
                (IpAddr::V4(a), IpAddr::V6(l)) => l.to_ipv4_mapped() == Some(a),
                (a, l) => a == l,
            };
            if covers {
                uids.push(uid);
            }
        }
    }
    Ok(uids)
}

/// The listening TCP sockets of one address family: address, port, owner uid.
fn listening(family: libc::c_int) -> std::io::Result<Vec<(std::net::IpAddr, u16, u32)>> {
    use std::io::{Error, ErrorKind};
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const TCP_LISTEN: u32 = 10;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const HEADER: usize = 16;

    // SAFETY: plain system calls on a socket this function owns and closes.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(Error::last_os_error());
    }
    struct Fd(libc::c_int);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: the descriptor is ours.
            unsafe { libc::close(self.0) };
        }
    }
    let fd = Fd(fd);
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: a valid timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };

    // nlmsghdr, then inet_diag_req_v2: family, protocol, ext, pad, states, sockid (48 bytes).
    let mut req = [0u8; HEADER + 56];
    req[0..4].copy_from_slice(&((HEADER + 56) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[HEADER] = family as u8;
    req[HEADER + 1] = libc::IPPROTO_TCP as u8;
    req[HEADER + 4..HEADER + 8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // SAFETY: sending a buffer we own to the kernel (a zeroed sockaddr_nl).
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            fd.0,
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
            &kernel as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(Error::last_os_error());
    }

    let mut found = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: receiving into a buffer we own, of the length given.
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            return Err(Error::last_os_error());
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= HEADER {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(msgs[4..6].try_into().unwrap());
            if len < HEADER || len > msgs.len() {
                return Err(Error::new(ErrorKind::InvalidData, "bad netlink message"));
            }
            match kind {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => {
                    let code = msgs
                        .get(HEADER..HEADER + 4)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                    return Err(Error::from_raw_os_error(-code));
                }
                _ => {}
            }
            // inet_diag_msg: family, state, timer, retrans, sockid (sport, dport, src[16],
            // dst[16], if, cookie[2]), expires, rqueue, wqueue, uid, inode.
            let msg = &msgs[HEADER..len];
            if msg.len() >= 72 {
                let port = u16::from_be_bytes([msg[4], msg[5]]);
                let src: [u8; 16] = msg[8..24].try_into().unwrap();
                let ip = if msg[0] as libc::c_int == libc::AF_INET {
                    std::net::IpAddr::from([src[0], src[1], src[2], src[3]])
                } else {
                    std::net::IpAddr::from(src)
                };
                let uid = u32::from_ne_bytes(msg[64..68].try_into().unwrap());
                found.push((ip, port, uid));
            }
            let aligned = (len + 3) & !3;
            msgs = &msgs[aligned.min(msgs.len())..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_found_with_their_owner() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = v4.local_addr().unwrap();
        assert_eq!(listener_uids(addr).unwrap(), [own_uid()]);
        drop(v4);
        assert_eq!(listener_uids(addr).unwrap(), Vec::<u32>::new());

        // A wildcard listener covers 127.0.0.1 too.
        let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = any.local_addr().unwrap().port();
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(listener_uids(loopback).unwrap(), [own_uid()]);
    }

    #[test]
    fn a_port_held_by_another_uid_is_refused_and_the_verdict_kept() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mine = TcpBackend::new("web/0", own_uid());
        assert_eq!(mine.check(addr), Ok(()));
        let theirs = TcpBackend::new("web/0", own_uid() + 1);
        let refused = theirs.check(addr).unwrap_err();
        assert!(refused.contains("belongs to uid"), "{refused}");
        // Gone, but refused for a second still (no query per connection meanwhile).
        drop(listener);
        assert!(theirs.check(addr).is_err());
        // Nothing listening is not a refusal: the connect will say so.
        let fresh = TcpBackend::new("web/0", own_uid() + 1);
        assert_eq!(fresh.check(addr), Ok(()));
    }
}
