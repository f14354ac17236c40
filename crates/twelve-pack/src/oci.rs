//! `twelve pack --oci`: the app as an OCI image archive (`oci-archive`, an image layout in
//! a tar), without Docker, buildah or rockcraft. Four layers:
//!
//! 1. **base**: Debian's root filesystem with the runtime the framework needs, made with
//!    `mmdebstrap` from Debian's packages (`SOURCE_DATE_EPOCH=0`), cached in
//!    `<cache_dir>/oci/` and reused by every pack;
//! 2. **dependencies**: the app's Python requirements (and gunicorn or uvicorn) installed
//!    with the base's own Python (`pip --target` into `/usr/local/lib/python3.X/dist-packages`,
//!    scripts in `/usr/local/bin`), cached by the requirements; for Go, the static binary
//!    (`CGO_ENABLED=0`) at the rock's `/usr/local/bin/<name>` (the base is minbase and
//!    `ca-certificates`);
//! 3. **app**: the app's files at the rock path (`/flask/app`, Go's `/app`) and the files the rock's
//!    services read (`/flask/gunicorn.conf.py`);
//! 4. **twelve**: `twelve` itself at `/usr/local/bin/twelve`, the rock's Pebble layer at
//!    `/var/lib/pebble/default/layers/001-<framework>.yaml`, for gunicorn apps the rock's
//!    `/bin/statsd_exporter` (twelve's exporter behind its flags), and the `_daemon_` user
//!    (584792) in `/etc/passwd` and `/etc/group`. The entrypoint is `twelve pebble run`,
//!    which starts the app's services as `_daemon_`, as rocks run Pebble.
//!
//! Layers are tars made by GNU tar with sorted names, mtime 0, owner 0 and no
//! atime/ctime, compressed with `gzip -n`: the same inputs give the same digests. Compressed
//! layers that depend only on cached inputs are cached too, so a warm pack of a changed app
//! tars and compresses only its own files.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use twelve_project::{Framework, Project};

use crate::inputs::{app_entries, copy_entries, hex};
use crate::run::{require_tool, run};
use crate::PackError;

/// The uid and gid of `_daemon_`, rockcraft's shared user.
pub const DAEMON_UID: u32 = 584792;

/// The Debian suite of the base layer (the machine's own).
pub const SUITE: &str = "bookworm";

pub struct OciOptions {
    /// Caches: `oci/base-*.tar.gz` (base layers), `oci/pip/` (pip's cache).
    pub cache_dir: PathBuf,
    /// The archive to write.
    pub output: PathBuf,
    /// `NAME:TAG` (the tag is the image layout's `org.opencontainers.image.ref.name`).
    pub tag: String,
    /// The `twelve` binary to put in the image.
    pub twelve_bin: PathBuf,
    /// Files the rock's services read, by rock path (the plan's `gunicorn.conf.py`).
    pub files: BTreeMap<String, String>,
    pub progress: Option<crate::Progress>,
}

impl OciOptions {
    fn say(&self, line: &str) {
        if let Some(p) = &self.progress {
            p(line);
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct OciImage {
    pub manifest_digest: String,
    pub config_digest: String,
    /// Compressed layer digests, base first.
    pub layers: Vec<String>,
    /// Compressed layer sizes, base first.
    pub layer_sizes: Vec<u64>,
    /// Whether the base layer came from the cache.
    pub base_cached: bool,
}

struct Blob {
    digest: String,
    diff_id: String,
    size: u64,
    path: PathBuf,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> PackError {
    move |e| PackError::io(context, e)
}

fn sha256_file(path: &Path) -> Result<(String, u64), PackError> {
    let mut f = fs::File::open(path).map_err(io(format!("reading {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((format!("sha256:{}", hex(&h.finalize())), size))
}

/// The Debian packages of the base for a framework, and the rock path of its app.
fn runtime(framework: Framework) -> Result<(&'static [&'static str], &'static str), PackError> {
    match framework {
        Framework::Flask => Ok((&["python3", "python3-pip", "ca-certificates"], "/flask/app")),
        Framework::Django => Ok((&["python3", "python3-pip", "ca-certificates"], "/django/app")),
        Framework::FastApi => Ok((&["python3", "python3-pip", "ca-certificates"], "/app")),
        // A static binary (CGO_ENABLED=0) needs no runtime but the CA certificates.
        Framework::Go => Ok((&["ca-certificates"], "/app")),
        other => Err(PackError::Invalid(format!(
            "`twelve pack --oci` builds Flask, Django, FastAPI and Go images so far, not {}: build a rock with rockcraft for this one",
            other.name()
        ))),
    }
}

/// A tar of `dir`'s contents, made reproducible, then gzipped: (compressed blob, diff id).
fn layer(dir: &Path, out: &Path) -> Result<Blob, PackError> {
    let tar_path = out.with_extension("tar");
    run(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--format=posix",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                "-cf",
            ])
            .arg(&tar_path)
            .arg("-C")
            .arg(dir)
            .arg("."),
        "tar -c (a layer)",
        "tar",
    )?;
    gzip_blob(&tar_path, out)
}

/// gzips `tar_path` to `out` (`gzip -n`: no name, no time) and removes the tar.
fn gzip_blob(tar_path: &Path, out: &Path) -> Result<Blob, PackError> {
    let (diff_id, _) = sha256_file(tar_path)?;
    let gz = fs::File::create(out).map_err(io(format!("creating {}", out.display())))?;
    let status = Command::new("gzip")
        .args(["-n", "-6", "-c"])
        .arg(tar_path)
        .stdout(gz)
        .status()
        .map_err(io("running gzip".into()))?;
    if !status.success() {
        return Err(PackError::StepFailed {
            command: format!("gzip -n {}", tar_path.display()),
            status: status.to_string(),
            tail: String::new(),
        });
    }
    let _ = fs::remove_file(tar_path);
    let (digest, size) = sha256_file(out)?;
    Ok(Blob {
        digest,
        diff_id,
        size,
        path: out.to_path_buf(),
    })
}

/// The base layer for `packages`, from the cache or made with mmdebstrap; and the base's
/// root filesystem, unpacked beside it (the app layer is built with its Python).
fn base(packages: &[&str], opts: &OciOptions) -> Result<(Blob, PathBuf, bool), PackError> {
    let dir = opts.cache_dir.join("oci");
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let key = &hex(&Sha256::digest(format!(
        "{SUITE} minbase {}",
        packages.join(",")
    )))[..12];
    let blob_path = dir.join(format!("base-{key}.tar.gz"));
    let meta_path = dir.join(format!("base-{key}.json"));
    let rootfs = dir.join(format!("base-{key}"));
    if let (true, Ok(meta)) = (rootfs.is_dir(), fs::read_to_string(&meta_path)) {
        if let Ok(m) = serde_json::from_str::<Value>(&meta) {
            if let (Some(d), Some(i), Some(s)) = (
                m["digest"].as_str(),
                m["diff_id"].as_str(),
                m["size"].as_u64(),
            ) {
                let blob = Blob {
                    digest: d.into(),
                    diff_id: i.into(),
                    size: s,
                    path: blob_path.clone(),
                };
                if blob.path.is_file() {
                    return Ok((blob, rootfs, true));
                }
            }
        }
    }
    let mmdebstrap = require_tool("mmdebstrap", "mmdebstrap")?;
    opts.say(&format!(
        "making the base layer with mmdebstrap ({SUITE}: {})",
        packages.join(", ")
    ));
    let tmp = dir.join(format!("base-{key}.tmp-{}", crate::next_suffix()));
    fs::create_dir_all(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let tar_path = tmp.join("base.tar");
    run(
        Command::new(mmdebstrap)
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["--variant=minbase", "--quiet"])
            .arg(format!("--include={}", packages.join(",")))
            .args([
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--dpkgopt=path-exclude=/usr/share/info/*",
                "--aptopt=Acquire::Languages \"none\"",
                "--customize-hook=rm -rf \"$1\"/var/cache/apt/* \"$1\"/var/lib/apt/lists/* \"$1\"/var/log/*",
                SUITE,
            ])
            .arg(&tar_path),
        "mmdebstrap (the base layer)",
        "mmdebstrap",
    )?;
    let unpacked = tmp.join("rootfs");
    fs::create_dir_all(&unpacked).map_err(io(format!("creating {}", unpacked.display())))?;
    run(
        Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(&tar_path)
            .arg("-C")
            .arg(&unpacked),
        "tar -x (the base layer)",
        "tar",
    )?;
    let blob = gzip_blob(&tar_path, &tmp.join("base.tar.gz"))?;
    let _ = fs::remove_dir_all(&rootfs);
    fs::rename(&unpacked, &rootfs).map_err(io(format!("moving {}", rootfs.display())))?;
    fs::rename(&blob.path, &blob_path).map_err(io(format!("moving {}", blob_path.display())))?;
    fs::write(
        &meta_path,
        json!({"digest": blob.digest, "diff_id": blob.diff_id, "size": blob.size}).to_string(),
    )
    .map_err(io(format!("writing {}", meta_path.display())))?;
    let _ = fs::remove_dir_all(&tmp);
    Ok((
        Blob {
            path: blob_path,
            ..blob
        },
        rootfs,
        false,
    ))
}

/// The base's `python3.X`.
fn base_python(rootfs: &Path) -> Result<String, PackError> {
    let mut names: Vec<String> = fs::read_dir(rootfs.join("usr/lib"))
        .map_err(io(format!("reading {}/usr/lib", rootfs.display())))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix("python3.")
                .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    names.sort();
    names
        .pop()
        .ok_or_else(|| PackError::Invalid("the base layer has no python3".into()))
}

/// Builds the image of `project` and writes the archive.
pub fn pack_oci(project: &Project, opts: &OciOptions) -> Result<OciImage, PackError> {
    let (packages, app_path) = runtime(project.framework)?;
    require_tool("tar", "tar")?;
    require_tool("gzip", "gzip")?;
    let (base, rootfs, base_cached) = base(packages, opts)?;
    if base_cached {
        opts.say("base layer: cached");
    }
    let work = opts
        .cache_dir
        .join("oci")
        .join(format!("build.tmp-{}", crate::next_suffix()));
    let result = build(project, opts, &work, base, &rootfs, app_path, base_cached);
    let _ = fs::remove_dir_all(&work);
    result
}

fn build(
    project: &Project,
    opts: &OciOptions,
    work: &Path,
    base: Blob,
    rootfs: &Path,
    app_path: &str,
    base_cached: bool,
) -> Result<OciImage, PackError> {
    let mkdir = |p: &Path| fs::create_dir_all(p).map_err(io(format!("creating {}", p.display())));
    // The app layer.
    let app_root = work.join("app-layer");
    let app_dir = app_root.join(app_path.trim_start_matches('/'));
    mkdir(app_dir.parent().unwrap_or(&app_root))?;
    fs::create_dir(&app_dir).map_err(io(format!("creating {}", app_dir.display())))?;
    copy_entries(&app_entries(project)?, &app_dir)?;
    for (path, content) in &opts.files {
        let to = app_root.join(path.trim_start_matches('/'));
        mkdir(to.parent().unwrap_or(&app_root))?;
        fs::write(&to, content).map_err(io(format!("writing {}", to.display())))?;
    }
    let blobs = work.join("blobs");
    mkdir(&blobs)?;
    let (deps_blob, deps_history) = if project.framework == Framework::Go {
        // The rock's /usr/local/bin/<name>: the static binary, built from the app layer's
        // copy of the sources (which stays in /app, as in the rock).
        let bin_root = work.join("bin-layer");
        go_binary(project, opts, &app_dir, &bin_root)?;
        (
            layer(&bin_root, &blobs.join("deps.tar.gz"))?,
            format!(
                "twelve pack --oci: /usr/local/bin/{}, built with go build (CGO_ENABLED=0)",
                project.name
            ),
        )
    } else {
        let py = base_python(rootfs)?;
        let deps = dependencies(project, opts, rootfs, &py, work)?;
        let deps_key = deps
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (
            cached_layer(opts, &deps_key, &deps, &blobs.join("deps.tar.gz"))?,
            format!("twelve pack --oci: the app's dependencies, installed with the base's {py}"),
        )
    };
    let app_blob = layer(&app_root, &blobs.join("app.tar.gz"))?;

    // The twelve layer.
    let tw = work.join("twelve-layer");
    let bin = tw.join("usr/local/bin");
    mkdir(&bin)?;
    fs::copy(&opts.twelve_bin, bin.join("twelve"))
        .map_err(io(format!("copying {}", opts.twelve_bin.display())))?;
    if project.framework.is_gunicorn() {
        // The rock's /bin/statsd_exporter (`k8s render`'s statsd-exporter container runs
        // it): twelve's own exporter, statsd_exporter's flags translated. In usr/bin: /bin
        // is the base's symlink to it.
        let prefix = project.framework.name();
        let script = format!(
            "#!/bin/sh\n# statsd_exporter's flags for twelve's exporter (twelve pack --oci).\nargs=\"--prefix {prefix}\"\nfor a in \"$@\"; do\n  case \"$a\" in\n    --statsd.listen-udp=*) args=\"$args --statsd-listen ${{a#*=}}\" ;;\n    --web.listen-address=*) args=\"$args --web-listen ${{a#*=}}\" ;;\n    --web.telemetry-path=*) args=\"$args --web-path ${{a#*=}}\" ;;\n  esac\ndone\nexec /usr/local/bin/twelve statsd-exporter $args\n"
        );
        let usr_bin = tw.join("usr/bin");
        mkdir(&usr_bin)?;
        let path = usr_bin.join("statsd_exporter");
        fs::write(&path, script).map_err(io(format!("writing {}", path.display())))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(io(format!("writing {}", path.display())))?;
    }
    let layers = tw.join("var/lib/pebble/default/layers");
    // Pebble wants a layer label of three characters or more: Go's is `go-framework`.
    let layer_label = match project.framework.name() {
        n if n.len() >= 3 => n,
        _ => project.framework.extension(),
    };
    mkdir(&layers)?;
    let fw = project.framework.name();
    let layer_doc = json!({
        "summary": format!("{fw} rock layer"),
        "services": project.services,
    });
    fs::write(
        layers.join(format!("001-{layer_label}.yaml")),
        serde_json::to_string_pretty(&layer_doc).unwrap_or_default(),
    )
    .map_err(io("writing the Pebble layer".into()))?;
    let etc = tw.join("etc");
    mkdir(&etc)?;
    for (file, line) in [
        (
            "passwd",
            format!("_daemon_:x:{DAEMON_UID}:{DAEMON_UID}::/nonexistent:/usr/sbin/nologin\n"),
        ),
        ("group", format!("_daemon_:x:{DAEMON_UID}:\n")),
    ] {
        let mut text = fs::read_to_string(rootfs.join("etc").join(file))
            .map_err(io(format!("reading the base's /etc/{file}")))?;
        if !text.contains("\n_daemon_:") {
            text.push_str(&line);
        }
        fs::write(etc.join(file), text).map_err(io(format!("writing /etc/{file}")))?;
    }
    // mmdebstrap leaves no /etc/hosts, and `localhost` must resolve (the statsd exporter
    // listens on localhost:9125) where no runtime mounts one.
    if !rootfs.join("etc/hosts").exists() {
        fs::write(
            etc.join("hosts"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        )
        .map_err(io("writing /etc/hosts".into()))?;
    }
    // Cached by what it holds: the binary (path, size, mtime) and the files written here.
    let mut key = Sha256::new();
    let meta = fs::metadata(&opts.twelve_bin)
        .map_err(io(format!("reading {}", opts.twelve_bin.display())))?;
    key.update(format!(
        "{} {} {:?}",
        opts.twelve_bin.display(),
        meta.len(),
        meta.modified().ok()
    ));
    key.update(format!(
        "statsd_exporter {}",
        project.framework.is_gunicorn()
    ));
    for f in [
        layers.join(format!("001-{layer_label}.yaml")),
        etc.join("passwd"),
        etc.join("group"),
    ] {
        key.update(fs::read(&f).map_err(io(format!("reading {}", f.display())))?);
    }
    let tw_key = format!("twelve-{}", &hex(&key.finalize())[..16]);
    let tw_blob = cached_layer(opts, &tw_key, &tw, &blobs.join("twelve.tar.gz"))?;

    // The image: config, manifest, index, in an OCI image layout, in a tar.
    let port = project.framework.default_port();
    let (name, tag) = opts
        .tag
        .rsplit_once(':')
        .unwrap_or((opts.tag.as_str(), "latest"));
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": ["/usr/local/bin/twelve", "pebble", "run", "--verbose"],
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "PEBBLE=/var/lib/pebble/default",
            ],
            "WorkingDir": app_path,
            "ExposedPorts": {format!("{port}/tcp"): {}},
            "Labels": {
                "org.opencontainers.image.title": name,
                "org.opencontainers.image.version": tag,
                "dev.twelve.framework": fw,
                "dev.twelve.services-user": format!("_daemon_ ({DAEMON_UID})"),
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [base.diff_id, deps_blob.diff_id, app_blob.diff_id, tw_blob.diff_id]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": format!("mmdebstrap --variant=minbase {SUITE} ({})", runtime(project.framework)?.0.join(", "))},
            {"created": "1970-01-01T00:00:00Z", "created_by": deps_history},
            {"created": "1970-01-01T00:00:00Z", "created_by": format!("twelve pack --oci: the app at {app_path}")},
            {"created": "1970-01-01T00:00:00Z", "created_by": "twelve pack --oci: twelve pebble and the rock's layer"},
        ],
    });
    let layout = work.join("layout");
    let blob_dir = layout.join("blobs/sha256");
    mkdir(&blob_dir)?;
    let put = |bytes: &[u8]| -> Result<(String, u64), PackError> {
        let digest = hex(&Sha256::digest(bytes));
        fs::write(blob_dir.join(&digest), bytes).map_err(io("writing a blob".into()))?;
        Ok((format!("sha256:{digest}"), bytes.len() as u64))
    };
    let (config_digest, config_size) = put(config.to_string().as_bytes())?;
    let layer_desc = |b: &Blob| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": b.digest, "size": b.size});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [layer_desc(&base), layer_desc(&deps_blob), layer_desc(&app_blob), layer_desc(&tw_blob)],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes())?;
    for b in [&base, &deps_blob, &app_blob, &tw_blob] {
        let to = blob_dir.join(b.digest.trim_start_matches("sha256:"));
        // Hard links where possible: the base is large and cached.
        if fs::hard_link(&b.path, &to).is_err() {
            fs::copy(&b.path, &to).map_err(io(format!("copying {}", b.path.display())))?;
        }
    }
    fs::write(
        layout.join("oci-layout"),
        json!({"imageLayoutVersion": "1.0.0"}).to_string(),
    )
    .map_err(io("writing oci-layout".into()))?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(layout.join("index.json"), index.to_string())
        .map_err(io("writing index.json".into()))?;
    opts.say(&format!("writing {}", opts.output.display()));
    let tmp_out = opts
        .output
        .with_file_name(format!(".{}.tmp", crate::next_suffix()));
    run(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--hard-dereference",
                "-cf",
            ])
            .arg(&tmp_out)
            .arg("-C")
            .arg(&layout)
            .args(["oci-layout", "index.json", "blobs"]),
        "tar -c (the archive)",
        "tar",
    )?;
    fs::rename(&tmp_out, &opts.output).map_err(io(format!("writing {}", opts.output.display())))?;
    Ok(OciImage {
        manifest_digest,
        config_digest,
        layers: vec![
            base.digest,
            deps_blob.digest,
            app_blob.digest,
            tw_blob.digest,
        ],
        layer_sizes: vec![base.size, deps_blob.size, app_blob.size, tw_blob.size],
        base_cached,
    })
}

/// `go build` of the app into `<root>/usr/local/bin/<name>`: static (`CGO_ENABLED=0`, so it
/// runs on a base without libc development files), reproducible (`-trimpath`, no VCS
/// stamp, no build id), with the pack cache's Go caches and no module downloads
/// (`GOPROXY=off`), as a release's Go build.
fn go_binary(
    project: &Project,
    opts: &OciOptions,
    src: &Path,
    root: &Path,
) -> Result<(), PackError> {
    let go = require_tool("go", "golang-go")?;
    let bin = root.join("usr/local/bin");
    fs::create_dir_all(&bin).map_err(io(format!("creating {}", bin.display())))?;
    let shown = format!("go build -trimpath -o /usr/local/bin/{} .", project.name);
    opts.say(&shown);
    run(
        Command::new(go)
            .current_dir(src)
            .args(["build", "-trimpath", "-ldflags=-buildid=", "-o"])
            .arg(bin.join(&project.name))
            .arg(".")
            .env("CGO_ENABLED", "0")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-buildvcs=false")
            .env("GOTOOLCHAIN", "local")
            .env("GOCACHE", opts.cache_dir.join("go-build"))
            .env("GOPATH", opts.cache_dir.join("go")),
        &shown,
        "golang-go",
    )?;
    Ok(())
}

/// The app's Python dependencies installed with the base's Python (`pip --target`), as a
/// tree to copy into the app layer (`usr/local/lib/python3.X/dist-packages`,
/// `usr/local/bin`); cached in `<cache_dir>/oci/deps-<hash>` by the base, the interpreter
/// and the requirements, so packing changed app code only does not run pip.
fn dependencies(
    project: &Project,
    opts: &OciOptions,
    rootfs: &Path,
    py: &str,
    work: &Path,
) -> Result<PathBuf, PackError> {
    let requirements = [&project.root, &project.files.app_source_dir]
        .into_iter()
        .map(|d| d.join("requirements.txt"))
        .find(|r| r.is_file());
    let server = match project.framework {
        Framework::FastApi => "uvicorn",
        _ => "gunicorn",
    };
    let mut key = Sha256::new();
    key.update(rootfs.as_os_str().as_encoded_bytes());
    key.update(py.as_bytes());
    key.update(server.as_bytes());
    if let Some(r) = &requirements {
        key.update(fs::read(r).map_err(io(format!("reading {}", r.display())))?);
    }
    let cached = opts
        .cache_dir
        .join("oci")
        .join(format!("deps-{}", &hex(&key.finalize())[..16]));
    if cached.is_dir() {
        opts.say("the app's dependencies: cached");
        return Ok(cached);
    }
    let tmp = work.join("deps");
    let site = tmp.join(format!("usr/local/lib/{py}/dist-packages"));
    fs::create_dir_all(&site).map_err(io(format!("creating {}", site.display())))?;
    let mut pip = Command::new(rootfs.join("usr/bin/python3"));
    pip.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PIP_CACHE_DIR", opts.cache_dir.join("oci/pip"))
        .env("SOURCE_DATE_EPOCH", "0")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--no-warn-script-location",
            "--break-system-packages",
            "--target",
        ])
        .arg(&site);
    if let Some(r) = &requirements {
        pip.arg("-r").arg(r);
    }
    pip.arg(server);
    opts.say(&format!(
        "installing the app's dependencies with the base's {py}"
    ));
    run(&mut pip, "pip install (the app layer)", "python3-pip")?;
    // pip --target leaves scripts in <site>/bin: put them on PATH.
    if site.join("bin").is_dir() {
        let bin = tmp.join("usr/local/bin");
        fs::rename(site.join("bin"), &bin).map_err(io("moving pip's scripts".into()))?;
    }
    // Scripts name the interpreter pip ran as: the image's is /usr/bin/python3.
    let host_python = rootfs.join("usr/bin/python3");
    for e in fs::read_dir(tmp.join("usr/local/bin"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = fs::read_to_string(e.path()) {
            let fixed = text.replacen(
                &format!("#!{}", host_python.display()),
                "#!/usr/bin/python3",
                1,
            );
            if fixed != text {
                fs::write(e.path(), fixed)
                    .map_err(io(format!("writing {}", e.path().display())))?;
            }
        }
    }
    fs::rename(&tmp, &cached).map_err(io(format!("moving {}", cached.display())))?;
    Ok(cached)
}

/// A layer of `dir`, from `<cache_dir>/oci/layer-<key>.tar.gz` when it was made before.
fn cached_layer(opts: &OciOptions, key: &str, dir: &Path, out: &Path) -> Result<Blob, PackError> {
    let cache = opts.cache_dir.join("oci");
    let blob_path = cache.join(format!("layer-{key}.tar.gz"));
    let meta_path = cache.join(format!("layer-{key}.json"));
    if let Ok(m) = fs::read_to_string(&meta_path)
        .map_err(|_| ())
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|_| ()))
    {
        if let (Some(d), Some(i), Some(s), true) = (
            m["digest"].as_str(),
            m["diff_id"].as_str(),
            m["size"].as_u64(),
            blob_path.is_file(),
        ) {
            return Ok(Blob {
                digest: d.into(),
                diff_id: i.into(),
                size: s,
                path: blob_path,
            });
        }
    }
    let blob = layer(dir, out)?;
    fs::copy(&blob.path, &blob_path).map_err(io(format!("writing {}", blob_path.display())))?;
    fs::write(
        &meta_path,
        json!({"digest": blob.digest, "diff_id": blob.diff_id, "size": blob.size}).to_string(),
    )
    .map_err(io(format!("writing {}", meta_path.display())))?;
    Ok(blob)
}
