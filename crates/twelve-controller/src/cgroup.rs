//! Units in cgroups of their own: every process a unit's supervisor starts (and whatever
//! those fork) stays in the unit's cgroup, so a unit is gone exactly when its cgroup is
//! empty, whatever happened to its supervisor; and its constraints (`mem`, `cores`) are
//! the cgroup's limits.
//!
//! Works on the three layouts Linux machines have:
//! - cgroup v2 alone (`/sys/fs/cgroup` is cgroup2): one directory per unit, `cgroup.kill`,
//!   `memory.max`, `cpu.max` (when the controllers can be enabled there);
//! - hybrid (v1 controllers plus a controller-less cgroup2 at `/sys/fs/cgroup/unified`):
//!   membership and `cgroup.kill` from the v2 tree, limits from v1's `memory` and `cpu`;
//! - v1 alone: membership from the `pids` (else `memory`) hierarchy, killing by signals.
//!
//! Each hierarchy's unit cgroups sit under `twelve-<home tag>` inside the cgroup the
//! controller itself was started in (its delegated subtree under systemd). The directories
//! a unit was given are written to `<unit dir>/.cgroups`, so cleaning up never depends on
//! where a later controller runs.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A unit's limits, from the app's constraints.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Bytes.
    pub memory: Option<u64>,
    /// CPU time per wall time, in thousandths of a core (1500 = 1.5 cores).
    pub cpu_millis: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// cgroup v2: processes, kill, and (when enabled) memory and cpu.
    V2,
    V1Memory,
    V1Cpu,
    /// v1 `pids`: membership only.
    V1Pids,
}

#[derive(Debug, Clone)]
struct Hierarchy {
    kind: Kind,
    /// `<mount><own cgroup>/twelve-<tag>`.
    base: PathBuf,
}

/// The cgroup hierarchies this controller puts units in; empty when it cannot (not root,
/// no cgroup file system), where units are not contained.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
    /// Why limits cannot be set, when they cannot.
    pub limits_unsupported: Option<String>,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Cgroups {
    /// Finds the hierarchies from `/proc/self/mounts` and `/proc/self/cgroup`.
    pub fn detect(tag: &str) -> Cgroups {
        if !nix::unistd::geteuid().is_root() {
            return Cgroups {
                hierarchies: vec![],
                limits_unsupported: Some("twelve does not run as root".into()),
            };
        }
        let mounts = read(Path::new("/proc/self/mounts"));
        let own = read(Path::new("/proc/self/cgroup"));
        Cgroups::from_tables(&mounts, &own, tag)
    }

    fn from_tables(mounts: &str, own: &str, tag: &str) -> Cgroups {
        // `hierarchy-id:controllers:path`; v2 is `0::path`.
        let own_path = |controller: Option<&str>| -> Option<String> {
            own.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                let hit = match controller {
                    None => ctrls.is_empty(),
                    Some(c) => ctrls.split(',').any(|x| x == c),
                };
                hit.then(|| path.to_string())
            })
        };
        let mut v2 = None;
        let mut v1: Vec<(String, String)> = vec![]; // (mount point, options)
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            match f[2] {
                "cgroup2" => v2 = Some(f[1].to_string()),
                "cgroup" => v1.push((f[1].to_string(), f[3].to_string())),
                _ => {}
            }
        }
        let dir = |mount: &str, own: &str| {
            PathBuf::from(mount)
                .join(own.trim_start_matches('/'))
                .join(format!("twelve-{tag}"))
        };
        let mut hierarchies = vec![];
        if let (Some(m), Some(p)) = (&v2, own_path(None)) {
            hierarchies.push(Hierarchy {
                kind: Kind::V2,
                base: dir(m, &p),
            });
        }
        let pure_v2 = v1.is_empty();
        for (kind, controller) in [
            (Kind::V1Memory, "memory"),
            (Kind::V1Cpu, "cpu"),
            (Kind::V1Pids, "pids"),
        ] {
            let Some((m, _)) = v1
                .iter()
                .find(|(_, opts)| opts.split(',').any(|o| o == controller))
            else {
                continue;
            };
            if let Some(p) = own_path(Some(controller)) {
                hierarchies.push(Hierarchy {
                    kind,
                    base: dir(m, &p),
                });
            }
        }
        let has = |k: Kind| hierarchies.iter().any(|h| h.kind == k);
        let limits_unsupported = if hierarchies.is_empty() {
            Some("no cgroup file system is mounted".to_string())
        } else if !pure_v2 && !has(Kind::V1Memory) {
            Some("the memory cgroup controller is not mounted".to_string())
        } else {
            None
        };
        Cgroups {
            hierarchies,
            limits_unsupported,
        }
    }

    /// Removes this controller's parent cgroups when no unit is left in them.
    pub fn remove_empty_bases(&self) {
        for h in &self.hierarchies {
            let _ = std::fs::remove_dir(&h.base);
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.hierarchies.is_empty()
    }

    /// The cgroups of the unit whose supervisor directory is `unit_dir`.
    pub fn unit(&self, unit_dir: &Path) -> UnitCgroup {
        let name = unit_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        UnitCgroup {
            record: unit_dir.join(".cgroups"),
            dirs: self
                .hierarchies
                .iter()
                .map(|h| (h.kind, h.base.join(&name)))
                .collect(),
        }
    }

    /// Creates the unit's cgroups with `limits` and records them in the unit directory.
    pub fn create(&self, unit_dir: &Path, limits: Limits) -> std::io::Result<UnitCgroup> {
        for h in &self.hierarchies {
            std::fs::create_dir_all(&h.base)?;
            if h.kind == Kind::V2 {
                // Let the units' cgroups have memory and cpu limits (fails harmlessly on
                // a controller-less hybrid tree, or where they are not delegated).
                let _ = std::fs::write(h.base.join("cgroup.subtree_control"), "+memory +cpu");
            }
        }
        let unit = self.unit(unit_dir);
        for (_, d) in &unit.dirs {
            std::fs::create_dir_all(d)?;
        }
        let list: String = unit
            .dirs
            .iter()
            .map(|(k, d)| format!("{} {}\n", kind_name(*k), d.display()))
            .collect();
        std::fs::write(&unit.record, list)?;
        unit.set_limits(limits);
        Ok(unit)
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::V2 => "v2",
        Kind::V1Memory => "memory",
        Kind::V1Cpu => "cpu",
        Kind::V1Pids => "pids",
    }
}

/// One unit's cgroup directories, one per hierarchy.
#[derive(Debug, Clone)]
pub struct UnitCgroup {
    record: PathBuf,
    dirs: Vec<(Kind, PathBuf)>,
}

impl UnitCgroup {
    /// The cgroups recorded in a unit directory (what the controller that started its
    /// supervisor gave it); empty when none were.
    pub fn recorded(unit_dir: &Path) -> UnitCgroup {
        let record = unit_dir.join(".cgroups");
        let dirs = read(&record)
            .lines()
            .filter_map(|l| {
                let (k, d) = l.split_once(' ')?;
                let kind = match k {
                    "v2" => Kind::V2,
                    "memory" => Kind::V1Memory,
                    "cpu" => Kind::V1Cpu,
                    "pids" => Kind::V1Pids,
                    _ => return None,
                };
                // Only directories of a cgroup file system, never a path someone wrote in.
                let d = PathBuf::from(d);
                (d.starts_with("/sys/fs/cgroup") && !d.components().any(|c| c.as_os_str() == ".."))
                    .then_some((kind, d))
            })
            .collect();
        UnitCgroup { record, dirs }
    }

    pub fn is_empty_record(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Sets (or lifts, with `None`) the memory and CPU limits, live.
    pub fn set_limits(&self, limits: Limits) {
        for (kind, d) in &self.dirs {
            match kind {
                Kind::V2 => {
                    let mem = limits
                        .memory
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| "max".into());
                    let _ = std::fs::write(d.join("memory.max"), &mem);
                    // The limit is on memory, not memory pushed to swap.
                    let swap = if limits.memory.is_some() { "0" } else { "max" };
                    let _ = std::fs::write(d.join("memory.swap.max"), swap);
                    let cpu = limits
                        .cpu_millis
                        .map(|m| format!("{} 100000", (m * 100).max(1000)))
                        .unwrap_or_else(|| "max 100000".into());
                    let _ = std::fs::write(d.join("cpu.max"), cpu);
                }
                Kind::V1Memory => {
                    let mem = limits
                        .memory
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| "-1".into());
                    // memory+swap may never be below memory: lift it, set memory, then
                    // hold memory+swap to the same (no escape to swap).
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    let _ = std::fs::write(&memsw, "-1");
                    let _ = std::fs::write(d.join("memory.limit_in_bytes"), &mem);
                    let _ = std::fs::write(&memsw, &mem);
                }
                Kind::V1Cpu => {
                    let _ = std::fs::write(d.join("cpu.cfs_period_us"), "100000");
                    let quota = limits
                        .cpu_millis
                        .map(|m| (m * 100).max(1000).to_string())
                        .unwrap_or_else(|| "-1".into());
                    let _ = std::fs::write(d.join("cpu.cfs_quota_us"), quota);
                }
                Kind::V1Pids => {}
            }
        }
    }

    /// The directory whose `cgroup.procs` tells membership best.
    fn membership(&self) -> Option<&Path> {
        [Kind::V2, Kind::V1Pids, Kind::V1Memory, Kind::V1Cpu]
            .iter()
            .find_map(|k| self.dirs.iter().find(|(kind, _)| kind == k))
            .map(|(_, d)| d.as_path())
    }

    /// The processes in the unit's cgroup.
    pub fn procs(&self) -> Vec<i32> {
        let Some(d) = self.membership() else {
            return vec![];
        };
        read(&d.join("cgroup.procs"))
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Opened `cgroup.procs` files: a process that writes `0` to each joins the unit.
    pub fn join_files(&self) -> std::io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .map(|(_, d)| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .map(OwnedFd::from)
            })
            .collect()
    }

    /// Kills every process in the unit and waits (up to `within`) until none is left.
    /// True when the cgroup is empty.
    pub fn kill_all(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let v2 = self.dirs.iter().find(|(k, _)| *k == Kind::V2);
        loop {
            let procs = self.procs();
            if procs.is_empty() {
                return true;
            }
            let killed = v2.is_some_and(|(_, d)| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.kill"))
                    .and_then(|mut f| f.write_all(b"1"))
                    .is_ok()
            });
            if !killed {
                for pid in procs {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if Instant::now() >= deadline {
                return self.procs().is_empty();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills what is left and removes the cgroups and the record.
    pub fn remove(&self) {
        self.kill_all(Duration::from_secs(5));
        for (_, d) in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_file(&self.record);
    }

    /// Memory the unit uses now and how often it hit its limit (OOM kills on v2, limit
    /// hits on v1), for status.
    pub fn memory_usage(&self) -> Option<u64> {
        self.dirs.iter().find_map(|(k, d)| match k {
            Kind::V2 => read(&d.join("memory.current")).trim().parse().ok(),
            Kind::V1Memory => read(&d.join("memory.usage_in_bytes")).trim().parse().ok(),
            _ => None,
        })
    }
}

/// Makes the calling process (between fork and exec) join the cgroups whose
/// `cgroup.procs` files are `fds`. Only raw `write`s: async-signal-safe.
pub fn join_in_child(fds: &[i32]) -> std::io::Result<()> {
    for fd in fds {
        // SAFETY: writing two bytes from a static buffer to an open descriptor.
        let n = unsafe { libc::write(*fd, b"0\n".as_ptr().cast(), 2) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The raw descriptors of opened files, for [`join_in_child`].
pub fn raw(fds: &[OwnedFd]) -> Vec<i32> {
    fds.iter().map(|f| f.as_raw_fd()).collect()
}

/// Parses Juju-style constraints: `mem=512M cores=1.5` (mem in MiB unless suffixed with
/// K, M, G or T; cores as a decimal number of CPUs). Unknown keys and bad values are
/// errors naming them.
pub fn parse_constraints(text: &str) -> Result<crate::model::Constraints, String> {
    let mut c = crate::model::Constraints::default();
    for word in text.split_whitespace() {
        let (k, v) = word.split_once('=').ok_or_else(|| {
            format!("constraint {word:?} is not key=value (for example mem=512M cores=1.5)")
        })?;
        match k {
            "mem" => {
                if v.is_empty() {
                    c.mem = None;
                    continue;
                }
                let (num, unit) = match v.char_indices().last() {
                    Some((i, ch)) if ch.is_ascii_alphabetic() => (&v[..i], ch),
                    _ => (v, 'M'),
                };
                let n: f64 = num
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| {
                        format!("mem={v}: not a positive size (for example 512M or 1.5G)")
                    })?;
                let mult: f64 = match unit.to_ascii_uppercase() {
                    'K' => 1024.0,
                    'M' => 1024.0 * 1024.0,
                    'G' => 1024.0 * 1024.0 * 1024.0,
                    'T' => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                    other => {
                        return Err(format!(
                            "mem={v}: unknown unit {other:?} (use K, M, G or T)"
                        ))
                    }
                };
                let bytes = (n * mult) as u64;
                if bytes < 16 * 1024 * 1024 {
                    return Err(format!(
                        "mem={v}: below 16M, too little for any unit to start"
                    ));
                }
                c.mem = Some(bytes);
            }
            "cores" => {
                if v.is_empty() {
                    c.cores = None;
                    continue;
                }
                let n: f64 = v
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite() && *n >= 0.01 && *n <= 1024.0)
                    .ok_or_else(|| {
                        format!("cores={v}: not a number of CPUs between 0.01 and 1024")
                    })?;
                c.cores = Some(n);
            }
            other => {
                return Err(format!(
                    "unknown constraint {other:?}: twelve supports mem and cores"
                ))
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
    const HYBRID_OWN: &str = "8:pids:/
4:memory:/process_api/abc
1:cpu:/
0::/
";

    #[test]
    fn hybrid_machines_track_in_v2_and_limit_in_v1_under_the_controllers_own_cgroup() {
        let c = Cgroups::from_tables(HYBRID_MOUNTS, HYBRID_OWN, "1234abcd");
        assert!(c.limits_unsupported.is_none());
        let u = c.unit(Path::new("/h/units/web-0.2"));
        let dirs: Vec<String> = u
            .dirs
            .iter()
            .map(|(_, d)| d.display().to_string())
            .collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/unified/twelve-1234abcd/web-0.2",
                "/sys/fs/cgroup/memory/process_api/abc/twelve-1234abcd/web-0.2",
                "/sys/fs/cgroup/cpu/twelve-1234abcd/web-0.2",
                "/sys/fs/cgroup/pids/twelve-1234abcd/web-0.2",
            ]
        );
        assert_eq!(
            u.membership(),
            Some(Path::new("/sys/fs/cgroup/unified/twelve-1234abcd/web-0.2"))
        );
    }

    #[test]
    fn pure_v2_and_no_cgroups() {
        let c = Cgroups::from_tables(
            "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n",
            "0::/system.slice/twelve.service\n",
            "t",
        );
        assert!(c.limits_unsupported.is_none());
        assert_eq!(
            c.unit(Path::new("/u/a-0")).dirs[0].1,
            PathBuf::from("/sys/fs/cgroup/system.slice/twelve.service/twelve-t/a-0")
        );
        let none = Cgroups::from_tables("proc /proc proc rw 0 0\n", "", "t");
        assert!(!none.is_enabled());
        assert!(none.limits_unsupported.is_some());
    }

    #[test]
    fn a_record_never_names_a_directory_outside_the_cgroup_file_system() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".cgroups"),
            "v2 /sys/fs/cgroup/unified/twelve-x/a-0\nmemory /etc\nv2 /sys/fs/cgroup/../../etc\nbogus /sys/fs/cgroup/x\n",
        )
        .unwrap();
        let u = UnitCgroup::recorded(dir.path());
        assert_eq!(u.dirs.len(), 1);
        assert_eq!(
            u.dirs[0].1,
            PathBuf::from("/sys/fs/cgroup/unified/twelve-x/a-0")
        );
    }

    #[test]
    fn constraints_parse_as_juju_writes_them() {
        let c = parse_constraints("mem=512M cores=1.5").unwrap();
        assert_eq!(c.mem, Some(512 * 1024 * 1024));
        assert_eq!(c.cores, Some(1.5));
        assert_eq!(
            parse_constraints("mem=2048").unwrap().mem,
            Some(2 << 30),
            "MiB without a unit, as Juju"
        );
        assert_eq!(parse_constraints("mem=1G").unwrap().mem, Some(1 << 30));
        for (bad, says) in [
            ("mem=-1G", "not a positive size"),
            ("mem=12X", "unknown unit"),
            ("mem=1M", "below 16M"),
            ("cores=0", "between 0.01 and 1024"),
            ("cores=lots", "between 0.01 and 1024"),
            ("disk=10G", "unknown constraint \"disk\""),
            ("mem", "not key=value"),
        ] {
            let e = parse_constraints(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
