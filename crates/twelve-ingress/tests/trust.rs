//! The ingress uses a unit's Unix socket only when the server on it is the app's own (its
//! uid, in a directory only that uid or root can write); anything else is skipped for TCP.
//! The foreign servers are real processes running as another uid (the tests run as root;
//! without root they are skipped with a message).

mod common;

use std::ffi::CString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use twelve_ingress::{Backend, BackendState, Policy};

const NOBODY: u32 = 65534;

const PLANTED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nplanted\n";
const BY_TCP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ntcp\n";

/// A server on a Unix socket, in a process of its own running as `uid`, answering every
/// connection with `200 planted` and closing it. Killed on drop.
struct Planted {
    pid: libc::pid_t,
}

impl Planted {
    fn start(uid: u32, path: &Path) -> Planted {
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        let answer = PLANTED;
        // SAFETY: after fork the child only makes system calls (no allocation, no lock)
        // and never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe { serve_as(uid, &c_path, answer) }
        }
        let planted = Planted { pid };
        let start = std::time::Instant::now();
        while !path.exists() {
            assert!(
                start.elapsed() < DEADLINE,
                "the planted server never listened"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        planted
    }
}

unsafe fn serve_as(uid: u32, path: &CString, answer: &[u8]) -> ! {
    if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0
    {
        libc::_exit(1);
    }
    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
    let mut addr: libc::sockaddr_un = std::mem::zeroed();
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (i, b) in path.as_bytes().iter().enumerate() {
        addr.sun_path[i] = *b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    if libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) != 0
        || libc::listen(fd, 64) != 0
    {
        libc::_exit(2);
    }
    let mut buf = [0u8; 4096];
    loop {
        let c = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
        if c < 0 {
            continue;
        }
        libc::read(c, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        libc::write(c, answer.as_ptr() as *const libc::c_void, answer.len());
        libc::close(c);
    }
}

impl Planted {
    /// The same server on TCP, `127.0.0.1:port`.
    fn start_tcp(uid: u32, port: u16, answer: &'static [u8]) -> Planted {
        // SAFETY: as in `start`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe { serve_tcp_as(uid, port, answer) }
        }
        let planted = Planted { pid };
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < DEADLINE,
                "the planted server never listened"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        planted
    }
}

unsafe fn serve_tcp_as(uid: u32, port: u16, answer: &[u8]) -> ! {
    if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0
    {
        libc::_exit(1);
    }
    let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
    let one: libc::c_int = 1;
    libc::setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &one as *const _ as *const libc::c_void,
        4,
    );
    let mut addr: libc::sockaddr_in = std::mem::zeroed();
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = port.to_be();
    addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    if libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) != 0
        || libc::listen(fd, 64) != 0
    {
        libc::_exit(2);
    }
    let mut buf = [0u8; 4096];
    loop {
        let c = libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut());
        if c < 0 {
            continue;
        }
        libc::read(c, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        libc::write(c, answer.as_ptr() as *const libc::c_void, answer.len());
        libc::close(c);
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A directory `run/` for a socket, owned by `owner` with `mode`, in a tempdir others can
/// traverse.
fn run_dir(owner: u32, mode: u32) -> (tempfile::TempDir, PathBuf) {
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = top.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(owner), Some(owner)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(mode)).unwrap();
    (top, run)
}

/// Which server answers a GET through the ingress to a unit on `addr` (TCP) and `socket`:
/// `planted` (the socket), `tcp` (a server run as another uid on TCP), the unit of a
/// [`TestBackend`], or the status when it is not 200.
async fn who_answers(addr: SocketAddr, socket: &Path, socket_uid: Option<u32>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ingress = start_ingress(dir.path()).await;
    let route = Backend {
        unit: "web/0".into(),
        addr,
        socket: Some(socket.to_path_buf()),
        socket_uid,
        state: BackendState::Ready,
    };
    ingress
        .set_routes(table(vec![("web", app(Policy::RoundRobin, vec![route]))]))
        .unwrap();
    let mut seen = Vec::new();
    // Several requests: every new connection is checked, on both worker threads.
    for _ in 0..4 {
        let reply = get(ingress.addr(), "web.localhost", "/").await;
        seen.push(match reply.body.as_str() {
            _ if reply.status != 200 => reply.status.as_str().to_string(),
            "planted\n" => "planted".to_string(),
            "tcp\n" => "tcp".to_string(),
            _ => reply.unit().to_string(),
        });
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "{seen:?}");
    seen.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_used_only_when_its_server_is_the_apps_uid_in_the_apps_own_directory() {
    if !is_root() {
        eprintln!("skipped: needs root to run a server as another uid");
        return;
    }
    // The unit's own TCP port: a TestBackend of this process (root) for routes without
    // socket_uid, a server run as 65534 for routes naming it.
    let as_root = TestBackend::start("web/0").await;
    let port = free_port();
    let _by_tcp = Planted::start_tcp(NOBODY, port, BY_TCP);
    let as_nobody: SocketAddr = ([127, 0, 0, 1], port).into();

    // The app's uid is 65534, its directory its own: its socket is used.
    let (_top, run) = run_dir(NOBODY, 0o755);
    let socket = run.join("gunicorn.sock");
    let planted = Planted::start(NOBODY, &socket);
    assert_eq!(
        who_answers(as_nobody, &socket, Some(NOBODY)).await,
        "planted"
    );

    // Without socket_uid the server must be the ingress's own uid (root here): the same
    // socket is another uid's, and TCP serves.
    assert_eq!(who_answers(as_root.addr, &socket, None).await, "web/0");
    // The route says another uid: neither the socket nor the TCP port is its.
    assert_eq!(who_answers(as_nobody, &socket, Some(1234)).await, "502");

    // The right uid, but its directory is writable by others: anyone could have replaced it.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(who_answers(as_nobody, &socket, Some(NOBODY)).await, "tcp");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o775)).unwrap();
    assert_eq!(who_answers(as_nobody, &socket, Some(NOBODY)).await, "tcp");
    // ... or owned by a third uid.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&run, Some(4321), Some(4321)).unwrap();
    assert_eq!(who_answers(as_nobody, &socket, Some(NOBODY)).await, "tcp");
    // Root's directory is fine.
    std::os::unix::fs::chown(&run, Some(0), Some(0)).unwrap();
    assert_eq!(
        who_answers(as_nobody, &socket, Some(NOBODY)).await,
        "planted"
    );
    drop(planted);
}

/// Issue 15: another app's uid puts its own server in place of the unit's socket. The
/// ingress must not send it the unit's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_planted_by_another_uid_is_not_used_and_requests_go_over_tcp() {
    if !is_root() {
        eprintln!("skipped: needs root to run a server as another uid");
        return;
    }
    let backend = TestBackend::start("web/0").await;
    // The app runs as root here (the ingress's own uid, no socket_uid); an attacker with
    // uid 65534 could write the directory and planted its server there.
    let (_top, run) = run_dir(NOBODY, 0o755);
    let socket = run.join("gunicorn.sock");
    let _planted = Planted::start(NOBODY, &socket);
    std::os::unix::fs::chown(&run, Some(0), Some(0)).unwrap();
    assert_eq!(who_answers(backend.addr, &socket, None).await, "web/0");
    assert_eq!(backend.hits(), 4);
}

/// While a unit restarts, another uid binds its port: with the unit's uid in the route, the
/// ingress sends it nothing (502), and serves again once the unit's own server listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_taken_over_by_another_uid_gets_no_request() {
    if !is_root() {
        eprintln!("skipped: needs root to run a server as another uid");
        return;
    }
    // The intruder: a server of this process (root) on the port web/0 had.
    let intruder = TestBackend::start("intruder/0").await;
    let dir = tempfile::tempdir().unwrap();
    let ingress = start_ingress(dir.path()).await;
    let web = |addr| Backend {
        unit: "web/0".into(),
        addr,
        socket: None,
        socket_uid: Some(NOBODY),
        state: BackendState::Ready,
    };
    ingress
        .set_routes(table(vec![(
            "web",
            app(Policy::RoundRobin, vec![web(intruder.addr)]),
        )]))
        .unwrap();
    for _ in 0..3 {
        let reply = get(ingress.addr(), "web.localhost", "/").await;
        assert_eq!(reply.status, 502, "{}", reply.body);
    }
    assert_eq!(intruder.hits(), 0);

    // web/0's own server, uid 65534, on a port of its own: served.
    let port = free_port();
    let _web = Planted::start_tcp(NOBODY, port, PLANTED);
    ingress
        .set_routes(table(vec![(
            "web",
            app(Policy::RoundRobin, vec![web(([127, 0, 0, 1], port).into())]),
        )]))
        .unwrap();
    let reply = get(ingress.addr(), "web.localhost", "/").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "planted\n");
}
