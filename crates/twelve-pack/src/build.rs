//! The per-framework build steps, run inside the release's temporary directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use twelve_project::{Framework, Project};

use crate::inputs::{self, Entry, Hasher};
use crate::run::{self, require_tool, run, version_of};
use crate::{next_suffix, PackError, PackOptions, Release};

/// Builds the release content into `dir` and fills in `release`'s tools and paths.
pub(crate) fn build(
    project: &Project,
    entries: &[Entry],
    dir: &Path,
    cache_dir: &Path,
    opts: &PackOptions,
    release: &mut Release,
) -> Result<(), PackError> {
    let app = dir.join("app");
    mkdir(&app)?;
    release
        .paths
        .insert(project.framework.app_dir().to_string(), "app".into());
    match project.framework {
        Framework::Flask | Framework::Django | Framework::FastApi => {
            opts.say("copying the app");
            inputs::copy_entries(entries, &app)?;
            python(project, dir, cache_dir, opts, release)
        }
        Framework::ExpressJs => {
            opts.say("copying the app");
            inputs::copy_entries(entries, &app)?;
            express(&app, opts, release)
        }
        Framework::Go => {
            opts.say("copying the app");
            inputs::copy_entries(entries, &app)?;
            go(project, dir, cache_dir, opts, release)
        }
        Framework::SpringBoot => {
            crate::java::spring(project, entries, dir, cache_dir, opts, release)
        }
    }
}

fn mkdir(p: &Path) -> Result<(), PackError> {
    fs::create_dir_all(p).map_err(|e| PackError::io(format!("creating {}", p.display()), e))
}

// ---------------------------------------------------------------- Python

/// The packages the rock extensions add to the requirements.
fn python_extras(framework: Framework) -> &'static [&'static str] {
    match framework {
        Framework::Flask | Framework::Django => &["gunicorn"],
        Framework::FastApi => &["uvicorn"],
        _ => &[],
    }
}

enum PyDeps {
    Requirements(PathBuf),
    Project(PathBuf),
    None,
}

fn python_deps(project: &Project) -> PyDeps {
    for dir in [&project.root, &project.files.app_source_dir] {
        if dir.join("requirements.txt").is_file() {
            return PyDeps::Requirements(dir.join("requirements.txt"));
        }
    }
    for dir in [&project.root, &project.files.app_source_dir] {
        if dir.join("pyproject.toml").is_file() {
            return PyDeps::Project(dir.clone());
        }
    }
    PyDeps::None
}

/// The interpreter venvs are made from: `$TWELVE_PYTHON`, else the system's
/// `/usr/bin/python3` when it can make venvs, else `python3` on PATH. Apps run as an
/// unprivileged user, so an interpreter under a private home (pyenv in /root) would not
/// start for them; the system one is readable by everyone.
fn python_interpreter() -> Result<PathBuf, PackError> {
    if let Some(p) = std::env::var_os("TWELVE_PYTHON").filter(|p| !p.is_empty()) {
        return require_tool(&PathBuf::from(p).display().to_string(), "python3-venv");
    }
    let system = Path::new("/usr/bin/python3");
    if system.is_file() {
        let ok = Command::new(system)
            .args(["-c", "import venv, ensurepip"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(system.to_path_buf());
        }
    }
    require_tool("python3", "python3-venv")
}

fn python(
    project: &Project,
    dir: &Path,
    cache_dir: &Path,
    opts: &PackOptions,
    release: &mut Release,
) -> Result<(), PackError> {
    let python = python_interpreter()?;
    let probe = run(
        Command::new(&python).args([
            "-c",
            "import sys, platform; print(platform.python_version()); print(sys.base_prefix)",
        ]),
        "python3 -c 'import sys'",
        "python3-venv",
    )?;
    let mut lines = probe.lines();
    let version = lines.next().unwrap_or("").trim().to_string();
    let base = lines.next().unwrap_or("").trim().to_string();
    release.tools.insert("python3".into(), version.clone());

    let deps = python_deps(project);
    let extras = python_extras(project.framework);
    let mut h = Hasher::new("twelve-venv/1");
    h.str(&version);
    h.str(&base);
    for e in extras {
        h.str(e);
    }
    match &deps {
        PyDeps::Requirements(p) => {
            h.str("requirements.txt");
            h.file(p)?;
        }
        PyDeps::Project(d) => {
            h.str("pyproject.toml");
            h.file(&d.join("pyproject.toml"))?;
        }
        PyDeps::None => h.str("none"),
    }
    let key = h.hex()[..16].to_string();
    let venvs = cache_dir.join("venvs");
    let venv = venvs.join(&key);

    if venv_ready(&venv) {
        opts.say(&format!("reusing virtual environment {key}"));
    } else {
        let installer = build_venv(&python, &venvs, &venv, &deps, extras, opts)?;
        release.tools.insert(installer.0.into(), installer.1);
    }

    std::os::unix::fs::symlink(&venv, dir.join("venv"))
        .map_err(|e| PackError::io(format!("linking {}", dir.join("venv").display()), e))?;
    release.venv = Some(venv);
    release
        .paths
        .insert("/bin/python3".into(), "venv/bin/python3".into());
    release
        .paths
        .insert("/usr/bin/python3".into(), "venv/bin/python3".into());
    Ok(())
}

const VENV_MARKER: &str = ".twelve-complete";

fn venv_ready(venv: &Path) -> bool {
    venv.join(VENV_MARKER).is_file() && fs::metadata(venv.join("bin/python3")).is_ok()
}

fn build_venv(
    python: &Path,
    venvs: &Path,
    venv: &Path,
    deps: &PyDeps,
    extras: &[&str],
    opts: &PackOptions,
) -> Result<(&'static str, String), PackError> {
    mkdir(venvs)?;
    crate::remove_stale(venvs);
    let name = venv
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = venvs.join(format!("{name}.tmp-{}", next_suffix()));
    let uv = match &opts.python_installer {
        crate::PythonInstaller::Auto => uv(),
        crate::PythonInstaller::Pip => None,
        crate::PythonInstaller::Uv(p) => Some(p.clone()),
    };
    if let Some(uv) = uv {
        let cache = venvs.parent().unwrap_or(venvs).join("uv");
        let result = uv_venv(&uv, &cache, python, &tmp, deps, extras, opts)
            .and_then(|()| relocate_venv(&tmp, venv))
            .and_then(|()| inputs::write_synced(&tmp.join(VENV_MARKER), b""));
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        move_in(venvs, &tmp, venv, &name)?;
        let version = run::version_of(&uv, &["--version"]).unwrap_or_default();
        return Ok(("uv", version));
    }
    let result = (|| {
        opts.say("creating virtual environment");
        let mut cmd = Command::new(python);
        cmd.arg("-m").arg("venv").arg(&tmp);
        let shown = "python3 -m venv";
        match run(&mut cmd, shown, "python3-venv") {
            Err(PackError::StepFailed { tail, .. })
                if tail.contains("ensurepip") || tail.contains("No module named venv") =>
            {
                return Err(PackError::ToolMissing {
                    tool: "python3 venv".into(),
                    package: "python3-venv".into(),
                    why: format!("`{shown}` cannot create a virtual environment:\n{tail}"),
                });
            }
            other => {
                other?;
            }
        }
        let mut cmd = Command::new(tmp.join("bin/python3"));
        cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"]);
        let mut shown = String::from("pip install");
        match deps {
            PyDeps::Requirements(req) => {
                if let Some(parent) = req.parent() {
                    cmd.current_dir(parent);
                }
                cmd.arg("-r").arg(req);
                shown.push_str(" -r requirements.txt");
            }
            PyDeps::Project(d) => {
                cmd.current_dir(d);
                cmd.arg(d);
                shown.push_str(" .");
            }
            PyDeps::None => {}
        }
        cmd.args(extras);
        for e in extras {
            shown.push(' ');
            shown.push_str(e);
        }
        opts.say(&shown);
        run(&mut cmd, &shown, "python3-pip")?;
        relocate_venv(&tmp, venv)?;
        inputs::write_synced(&tmp.join(VENV_MARKER), b"")
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    move_in(venvs, &tmp, venv, &name)?;
    Ok(("pip", String::new()))
}

/// Renames a finished venv into place (a broken one there is moved aside first; one that
/// another pack finished meanwhile wins).
fn move_in(venvs: &Path, tmp: &Path, venv: &Path, name: &str) -> Result<(), PackError> {
    // A half-built or broken venv from earlier is moved aside first.
    if venv.exists() && !venv_ready(venv) {
        let aside = venvs.join(format!("{name}.old-{}", next_suffix()));
        if fs::rename(venv, &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
    }
    match fs::rename(tmp, venv) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_dir_all(tmp);
            // Another pack built the same venv meanwhile: use theirs.
            if venv_ready(venv) {
                Ok(())
            } else {
                Err(PackError::io(
                    format!("moving the venv to {}", venv.display()),
                    e,
                ))
            }
        }
    }
}

/// uv, the installer rockcraft's Python plugins use: `$TWELVE_UV` (a path; `pip` to
/// use pip instead), else `uv` on PATH. `None`: pip builds the venv (slower).
fn uv() -> Option<PathBuf> {
    match std::env::var("TWELVE_UV") {
        Ok(v) if v == "pip" => None,
        Ok(v) if !v.is_empty() => run::which(&v),
        _ => run::which("uv"),
    }
}

/// Builds the venv with uv: `uv venv` with the chosen interpreter (uv never downloads
/// one), then `uv pip install`, with uv's cache of wheels in the pack cache (`uv/`), so
/// that a venv of packages seen before is hard links, not downloads and unpacking.
fn uv_venv(
    uv: &Path,
    cache: &Path,
    python: &Path,
    tmp: &Path,
    deps: &PyDeps,
    extras: &[&str],
    opts: &PackOptions,
) -> Result<(), PackError> {
    let env = |cmd: &mut Command| {
        cmd.env("UV_CACHE_DIR", cache)
            .env("UV_PYTHON_DOWNLOADS", "never")
            .env("UV_NO_PROGRESS", "1")
            .env_remove("VIRTUAL_ENV");
        // An index set for pip is the index for uv too.
        if std::env::var_os("UV_INDEX_URL").is_none()
            && std::env::var_os("UV_DEFAULT_INDEX").is_none()
        {
            if let Some(i) = std::env::var_os("PIP_INDEX_URL") {
                cmd.env("UV_DEFAULT_INDEX", i);
            }
        }
    };
    opts.say("creating virtual environment (uv)");
    let mut cmd = Command::new(uv);
    env(&mut cmd);
    cmd.args(["venv", "--quiet", "--python"])
        .arg(python)
        .arg(tmp);
    run(&mut cmd, "uv venv", "uv (PyPI: pip install uv)")?;
    let install = |offline: bool| {
        let mut cmd = Command::new(uv);
        env(&mut cmd);
        cmd.args(["pip", "install", "--quiet", "--python"])
            .arg(tmp.join("bin/python3"));
        if offline {
            cmd.arg("--offline");
        }
        match deps {
            PyDeps::Requirements(req) => {
                if let Some(parent) = req.parent() {
                    cmd.current_dir(parent);
                }
                cmd.arg("-r").arg(req);
            }
            PyDeps::Project(d) => {
                cmd.current_dir(d);
                cmd.arg(d);
            }
            PyDeps::None => {}
        }
        cmd.args(extras);
        cmd
    };
    let mut shown = String::from("uv pip install");
    match deps {
        PyDeps::Requirements(_) => shown.push_str(" -r requirements.txt"),
        PyDeps::Project(_) => shown.push_str(" ."),
        PyDeps::None => {}
    }
    for e in extras {
        shown.push(' ');
        shown.push_str(e);
    }
    opts.say(&shown);
    // From the wheels already in the cache when they satisfy the requirements (no index
    // round trips), else from the index.
    if run(&mut install(true), &shown, "uv (PyPI: pip install uv)").is_ok() {
        return Ok(());
    }
    run(&mut install(false), &shown, "uv (PyPI: pip install uv)").map(|_| ())
}

/// Rewrites the temporary venv path to its final one in the scripts of `bin/` (console
/// script shebangs, activate scripts) and in pyvenv.cfg, as venvs are not relocatable.
fn relocate_venv(tmp: &Path, venv: &Path) -> Result<(), PackError> {
    let from = tmp.as_os_str().as_encoded_bytes();
    let to = venv.as_os_str().as_encoded_bytes();
    let mut files: Vec<PathBuf> = vec![tmp.join("pyvenv.cfg")];
    if let Ok(rd) = fs::read_dir(tmp.join("bin")) {
        files.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    for f in files {
        let Ok(meta) = fs::symlink_metadata(&f) else {
            continue;
        };
        if !meta.file_type().is_file() || meta.len() > 1024 * 1024 {
            continue;
        }
        let bytes =
            fs::read(&f).map_err(|e| PackError::io(format!("reading {}", f.display()), e))?;
        if let Some(new) = replace_bytes(&bytes, from, to) {
            fs::write(&f, new).map_err(|e| PackError::io(format!("writing {}", f.display()), e))?;
        }
    }
    Ok(())
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    if from.is_empty() || !hay.windows(from.len()).any(|w| w == from) {
        return None;
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    Some(out)
}

// ---------------------------------------------------------------- ExpressJS

fn express(app: &Path, opts: &PackOptions, release: &mut Release) -> Result<(), PackError> {
    let manifest = app.join("package.json");
    let text = fs::read_to_string(&manifest).map_err(|_| {
        PackError::Invalid(
            "an ExpressJS project needs app/package.json (the rock's npm package)".into(),
        )
    })?;
    let npm = require_tool("npm", "npm")?;
    if let Some(v) = version_of(&npm, &["--version"]) {
        release.tools.insert("npm".into(), v);
    }
    if let Some(node) = run::which("node") {
        if let Some(v) = version_of(&node, &["--version"]) {
            release.tools.insert("node".into(), v);
        }
    }
    let locked =
        app.join("package-lock.json").is_file() || app.join("npm-shrinkwrap.json").is_file();
    let verb = if locked { "ci" } else { "install" };
    let mut cmd = Command::new(&npm);
    cmd.current_dir(app).args([
        verb,
        "--omit=dev",
        "--no-audit",
        "--no-fund",
        "--prefer-offline",
    ]);
    let shown = format!("npm {verb} --omit=dev");
    opts.say(&shown);
    run(&mut cmd, &shown, "npm")?;
    // The rock's /app is a symlink to /lib/node_modules/<package>.
    if let Some(pkg) = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(str::to_string))
    {
        release
            .paths
            .insert(format!("/lib/node_modules/{pkg}"), "app".into());
    }
    Ok(())
}

// ---------------------------------------------------------------- Go

fn go(
    project: &Project,
    dir: &Path,
    cache_dir: &Path,
    opts: &PackOptions,
    release: &mut Release,
) -> Result<(), PackError> {
    let go = require_tool("go", "golang-go")?;
    if let Some(v) = version_of(&go, &["version"]) {
        release.tools.insert("go".into(), v);
    }
    let bin = dir.join("bin");
    mkdir(&bin)?;
    let out = bin.join(&project.name);
    let mut cmd = Command::new(&go);
    cmd.current_dir(dir.join("app"))
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(".")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", cache_dir.join("go-build"))
        .env("GOPATH", cache_dir.join("go"));
    if std::env::var_os("CGO_ENABLED").is_none() {
        cmd.env("CGO_ENABLED", "0");
    }
    let shown = format!("go build -o bin/{} .", project.name);
    opts.say(&shown);
    run(&mut cmd, &shown, "golang-go")?;
    let rel = format!("bin/{}", project.name);
    release
        .paths
        .insert(format!("/usr/local/bin/{}", project.name), rel.clone());
    release.binary = Some(rel);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence() {
        let out = replace_bytes(
            b"#!/a/tmp-1/bin/python3\nX=/a/tmp-1\n",
            b"/a/tmp-1",
            b"/a/v",
        )
        .unwrap();
        assert_eq!(out, b"#!/a/v/bin/python3\nX=/a/v\n");
        assert!(replace_bytes(b"nothing", b"/a/tmp-1", b"/a/v").is_none());
    }
}
