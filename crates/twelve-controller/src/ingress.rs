//! The ingress: one long-lived `twelve ingress run` that routes `http://<app>.localhost:PORT/`
//! to ready units. The controller keeps it running and sends it the route table; units
//! leave rotation (draining) before they restart or stop, and come back once ready.

use std::time::{Duration, Instant};

use twelve_ingress::client;
use twelve_ingress::{AppRoute, Backend, BackendState, RouteTable};

use crate::controller::Controller;
use crate::model::AppRecord;

pub const DEFAULT_PORT: u16 = 8080;

/// The ingress port: `TWELVE_INGRESS_PORT`, else 8080.
pub fn port_from_env() -> u16 {
    std::env::var("TWELVE_INGRESS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_PORT)
}

impl Controller {
    pub(crate) fn ingress_socket(&self) -> std::path::PathBuf {
        self.home.root.join("ingress").join("ingress.sock")
    }

    /// The app's URL through the ingress.
    /// The app's URL: its first domain (crate::edge), else through the ingress.
    pub(crate) fn app_url(&self, app: &str) -> String {
        if let Some(url) = self.domain_url(app) {
            return url;
        }
        format!("http://{app}.localhost:{}", self.http_listener().port())
    }

    /// The pid of this home's ingress when it runs.
    fn ingress_pid(&self) -> Option<nix::unistd::Pid> {
        let dir = self.home.root.join("ingress");
        let pid: i32 = std::fs::read_to_string(dir.join(twelve_ingress::PID_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // Only a `twelve ingress run` of this home's directory, never a reused pid.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args
            .windows(2)
            .any(|w| w[0] == b"ingress" && w[1] == b"run")
            && args.contains(&dir.as_os_str().as_encoded_bytes());
        ours.then(|| nix::unistd::Pid::from_raw(pid))
    }

    /// Starts the ingress when it does not answer. Fails, naming the holder, when its
    /// port is held by anything else: another controller's ingress, or any other server.
    pub(crate) async fn ensure_ingress(&self) -> Result<(), String> {
        let sock = self.ingress_socket();
        if client::get_routes(&sock).await.is_ok() {
            *self.ingress_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return Ok(());
        }
        let result = self.start_ingress().await;
        *self.ingress_error.lock().unwrap_or_else(|e| e.into_inner()) = result.clone().err();
        result
    }

    async fn start_ingress(&self) -> Result<(), String> {
        let sock = self.ingress_socket();
        if let Some(pid) = self.ingress_pid() {
            return Err(format!(
                "the ingress (pid {pid}) runs but does not answer on {}",
                sock.display()
            ));
        }
        let http = self.http_listener();
        let https = self.https_listener();
        for addr in std::iter::once(http).chain(https) {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                let holder = port_holder(addr.port())
                    .map(|h| format!(" by {h}"))
                    .unwrap_or_default();
                return Err(format!(
                    "the ingress port {} is already held{holder} ({e}): it is not this controller's ingress, so apps could not be reached through it; stop that process, or give this controller another port with TWELVE_INGRESS_PORT or `twelve ingress configure`",
                    addr.port()
                ));
            }
        }
        let dir = self.home.root.join("ingress");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = http.port().to_string();
        let bind = http.ip().to_string();
        let dir_s = dir.display().to_string();
        let mut args = vec![
            "ingress", "run", "--dir", &dir_s, "--port", &port, "--bind", &bind,
        ];
        let https_s = https.map(|a| a.to_string()).unwrap_or_default();
        if https.is_some() {
            args.extend(["--https", https_s.as_str()]);
        }
        // The pushed table is gone with the old ingress: push it whole again.
        *self.routes_pushed.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let child = crate::client::spawn_detached(
            &self.exe,
            &args,
            &self.home.root,
            &dir.join("ingress.log"),
            true,
        )
        .map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if client::get_routes(&sock).await.is_ok() {
                eprintln!("[controller] started the ingress on port {port}");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "the ingress did not start on port {port} (see {})",
            dir.join("ingress.log").display()
        ))
    }

    /// Restarts the ingress on the listeners of now: the old one finishes its requests in
    /// flight (SIGTERM), then a new one starts.
    pub(crate) async fn restart_ingress(&self) {
        if let Some(pid) = self.ingress_pid() {
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && nix::sys::signal::kill(pid, None).is_ok() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        if let Err(e) = self.ensure_ingress().await {
            crate::controller::log(format!("ingress: {e}"));
        }
        let apps = self.store.apps().unwrap_or_default();
        self.push_routes(&apps).await;
    }

    /// Stops the ingress (it finishes the requests in flight) when this controller has
    /// nothing left for it to serve: called as the controller stops.
    /// Whether [`Self::stop_ingress_if_unused`] will stop a running ingress (no app left).
    pub(crate) fn ingress_unused(&self) -> bool {
        self.store.apps().unwrap_or_default().is_empty() && self.ingress_pid().is_some()
    }

    pub(crate) async fn stop_ingress_if_unused(&self) {
        let apps = self.store.apps().unwrap_or_default();
        if !apps.is_empty() {
            return;
        }
        let Some(pid) = self.ingress_pid() else {
            return;
        };
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && nix::sys::signal::kill(pid, None).is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        crate::controller::log(format!("stopped the ingress (pid {pid}): no app left"));
    }

    /// The table as it should be now: ready units in rotation, units being changed out.
    pub(crate) fn route_table(&self, apps: &[AppRecord]) -> RouteTable {
        let statuses = self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let draining = self
            .draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let previous = self
            .routes_pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut table = RouteTable::default();
        for app in apps {
            let st = statuses.get(&app.name);
            if st.is_none() {
                // Not looked at yet since this controller started: what the ingress
                // routes keeps serving until the first pass says otherwise.
                if let Some(route) = previous.as_ref().and_then(|t| t.apps.get(&app.name)) {
                    table.apps.insert(app.name.clone(), route.clone());
                    continue;
                }
            }
            let mut backends = vec![];
            // The uid the app's servers run as, which the ingress checks its listeners
            // against (none when twelve runs unprivileged).
            let socket_uid = self.app_user(&app.name).ok().flatten().map(|u| u.uid);
            for u in &app.units {
                let unit = format!("{}/{}", app.name, u.number);
                // Ready and running its plan, or the plan it keeps while the app is
                // blocked (a bad value, a revoked secret, a failed migration).
                let ready = st
                    .and_then(|s| s.units.iter().find(|x| x.name == unit))
                    .is_some_and(|x| x.serving);
                let Ok(addr) = format!("127.0.0.1:{}", u.app_port).parse() else {
                    continue;
                };
                // A gunicorn unit's socket: there once gunicorn has bound it (before the
                // unit is ready); the ingress goes to the port when it stops answering.
                let socket = crate::substrate::gunicorn_socket(&app.unit_dir(&self.home, u.number))
                    .filter(|p| p.exists());
                if draining.contains(&unit) {
                    backends.push(Backend {
                        unit,
                        addr,
                        socket,
                        socket_uid,
                        state: BackendState::Draining,
                    });
                } else if ready {
                    backends.push(Backend {
                        unit,
                        addr,
                        socket,
                        socket_uid,
                        state: BackendState::Ready,
                    });
                }
            }
            table.apps.insert(
                app.name.clone(),
                AppRoute {
                    status: st
                        .map(|s| s.status.clone())
                        .unwrap_or_else(|| "maintenance".into()),
                    message: st.map(|s| s.message.clone()).unwrap_or_default(),
                    backends,
                    ..Default::default()
                },
            );
        }
        self.edge_routes(&mut table);
        table
    }

    /// Sends the table when it changed.
    pub(crate) async fn push_routes(&self, apps: &[AppRecord]) {
        self.adopt_ingress_routes().await;
        let table = self.route_table(apps);
        let same = self
            .routes_pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&table);
        if same {
            return;
        }
        if std::env::var_os("TWELVE_DEBUG_ROUTES").is_some() {
            let summary: Vec<String> = table
                .apps
                .iter()
                .map(|(a, r)| {
                    format!(
                        "{a}: {}",
                        r.backends
                            .iter()
                            .map(|b| format!("{}@{}:{:?}", b.unit, b.addr, b.state))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                })
                .collect();
            eprintln!("[controller] routes: {}", summary.join("; "));
        }
        match client::put_routes(&self.ingress_socket(), &table).await {
            Ok(()) => *self.routes_pushed.lock().unwrap_or_else(|e| e.into_inner()) = Some(table),
            Err(e) => eprintln!("[controller] cannot update the ingress routes: {e}"),
        }
    }

    /// A controller that just started takes the table the ingress has as its own, so that
    /// apps it has not looked at yet keep their backends (the ingress outlives it).
    async fn adopt_ingress_routes(&self) {
        if self
            .routes_pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        if let Ok(table) = client::get_routes(&self.ingress_socket()).await {
            let mut pushed = self.routes_pushed.lock().unwrap_or_else(|e| e.into_inner());
            if pushed.is_none() {
                *pushed = Some(table);
            }
        }
    }

    /// Takes a unit out of rotation and waits (bounded) for its requests to finish.
    pub(crate) async fn drain_unit(&self, app: &AppRecord, unit: u32, apps: &[AppRecord]) {
        let name = format!("{}/{}", app.name, unit);
        self.draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        self.push_routes(apps).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let busy = match client::get_inflight(&self.ingress_socket()).await {
                Ok(list) => list.iter().any(|b| b.unit == name && b.inflight > 0),
                Err(_) => false,
            };
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Puts a unit back (it is added again once its status is active).
    pub(crate) fn undrain_unit(&self, app: &str, unit: u32) {
        self.draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{app}/{unit}"));
    }
}

/// Who listens on a TCP port of this machine: `pid N (command)`, from `/proc/net/tcp*`
/// and the processes' descriptors; `None` when it cannot be told (another user's process
/// when not root, another network namespace).
pub fn port_holder(port: u16) -> Option<String> {
    let mut inodes = vec![];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; inode is field 9.
            if f.len() > 9 && f[3] == "0A" {
                let local_port = f[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                if local_port == Some(port) {
                    inodes.push(format!("socket:[{}]", f[9]));
                }
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc_entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                let cmd = std::fs::read(proc_entry.path().join("cmdline"))
                    .map(|c| {
                        c.split(|b| *b == 0)
                            .filter(|a| !a.is_empty())
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                return Some(format!("pid {pid} ({cmd})"));
            }
        }
    }
    None
}
