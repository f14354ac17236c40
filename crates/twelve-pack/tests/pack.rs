//! Real packs of the example apps with the real tools (python3, pip, npm, go, javac).
//! Each test packs into its own releases dir; the caches (venvs, Go build cache) are shared
//! across tests and runs under ~/.cache/twelve/test-pack-cache.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use twelve_pack::{gc, list_releases, pack, PackError, PackOptions, Release};
use twelve_project::Project;

fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/twelve/test-pack-cache")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "node_modules" || name == "target" || name == "__pycache__" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A copy of examples/<name> in a temp dir, and a releases dir beside it.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    releases: PathBuf,
}

fn fixture(example: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(example);
    copy_tree(&examples().join(example), &root);
    let releases = tmp.path().join("releases");
    Fixture {
        _tmp: tmp,
        root,
        releases,
    }
}

impl Fixture {
    fn opts(&self) -> PackOptions {
        PackOptions::new(&self.releases, cache_dir())
    }

    fn pack(&self) -> Release {
        let project = Project::load(&self.root).unwrap_or_else(|d| panic!("{d:?}"));
        pack(&project, &self.opts()).unwrap_or_else(|e| panic!("pack failed: {e}"))
    }
}

fn python_ok(release: &Release, code: &str) {
    let py = release.dir.join("venv/bin/python3");
    let out = Command::new(&py).args(["-c", code]).output().unwrap();
    assert!(
        out.status.success(),
        "{} -c {code:?}: {}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET http://127.0.0.1:<port><path>, retrying the connection for up to `wait`.
fn http_get(port: u16, path: &str, wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
                let mut body = String::new();
                s.read_to_string(&mut body).unwrap();
                return body;
            }
            Err(e) if Instant::now() > deadline => panic!("nothing listens on {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn flask_pack_reuse_new_id_and_shared_venv() {
    let f = fixture("flask");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let project = Project::load(&f.root).unwrap();
    let opts = f
        .opts()
        .with_progress(move |l| seen.lock().unwrap().push(l.to_string()));
    let first = pack(&project, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(!first.reused);
    assert!(
        first.id.starts_with("r-") && first.id.len() == 14,
        "{}",
        first.id
    );
    assert_eq!(&first.inputs_hash[..12], &first.id[2..]);
    assert_eq!(first.dir, f.releases.join(&first.id));
    assert!(first.dir.join("release.json").is_file());
    assert!(first.dir.join("app/app.py").is_file());
    assert!(first.dir.join("app/rockcraft.yaml").is_file());
    assert!(
        !first.dir.join("app/charm").exists(),
        "the charm is not part of the app"
    );
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("building release")));
    python_ok(&first, "import flask, gunicorn");

    // The path map: longest rock path first, python from the venv.
    let paths = first.rock_paths();
    assert_eq!(paths[0].0, "/usr/bin/python3");
    assert!(paths.windows(2).all(|w| w[0].0.len() >= w[1].0.len()));
    let get = |rock: &str| {
        paths
            .iter()
            .find(|(r, _)| r == rock)
            .map(|(_, h)| h.clone())
    };
    assert_eq!(get("/flask/app"), Some(first.dir.join("app")));
    assert_eq!(
        get("/bin/python3"),
        Some(first.dir.join("venv/bin/python3"))
    );
    assert_eq!(
        first.path_env(),
        first.dir.join("venv/bin").display().to_string()
    );
    // Console scripts in the venv work from the venv's final place.
    let out = Command::new(first.dir.join("venv/bin/gunicorn"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Unchanged inputs: the same release, at once.
    let t = Instant::now();
    let again = f.pack();
    assert!(again.reused);
    assert_eq!(again.id, first.id);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "reuse took {:?}",
        t.elapsed()
    );
    assert_eq!(
        Release::load(&f.releases, &first.id).unwrap().created,
        first.created
    );

    // Skipped files do not change the id.
    fs::create_dir_all(f.root.join("__pycache__")).unwrap();
    fs::write(f.root.join("__pycache__/app.cpython-311.pyc"), b"junk").unwrap();
    fs::write(f.root.join("charm/notes.txt"), b"charm-only").unwrap();
    assert_eq!(f.pack().id, first.id);

    // A changed app.py: a new release sharing the venv.
    let mut src = fs::read_to_string(f.root.join("app.py")).unwrap();
    src.push_str("\n# changed\n");
    fs::write(f.root.join("app.py"), src).unwrap();
    let second = f.pack();
    assert!(!second.reused);
    assert_ne!(second.id, first.id);
    assert_eq!(
        fs::read_link(second.dir.join("venv")).unwrap(),
        fs::read_link(first.dir.join("venv")).unwrap()
    );
    assert_eq!(second.venv, first.venv);
    assert!(fs::read_to_string(second.dir.join("app/app.py"))
        .unwrap()
        .ends_with("# changed\n"));

    // list and gc.
    let ids: Vec<String> = list_releases(&f.releases)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&first.id) && ids.contains(&second.id));
    // What a killed pack leaves behind goes too.
    fs::create_dir_all(f.releases.join("r-0123456789ab.tmp-999999999-0/app")).unwrap();
    let deleted = gc(&f.releases, std::slice::from_ref(&second.id)).unwrap();
    assert_eq!(deleted, vec![first.id.clone()]);
    assert!(!first.dir.exists());
    assert!(
        second.dir.join("venv/bin/python3").exists(),
        "gc keeps the shared venv"
    );
    assert!(matches!(
        Release::load(&f.releases, &first.id),
        Err(PackError::NotFound { .. })
    ));
    let left: Vec<_> = fs::read_dir(&f.releases)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from(&second.id)]);
}

/// uv builds the venv (scripts/setup.sh installs it), pip when asked or when uv is
/// missing; both give a venv that imports the app's dependencies.
#[test]
fn venvs_are_built_with_uv_and_pip_remains_the_fallback() {
    for installer in ["uv", "pip"] {
        let f = fixture("fastapi");
        let cache = tempfile::tempdir().unwrap();
        let mut opts = PackOptions::new(&f.releases, cache.path());
        if installer == "pip" {
            opts.python_installer = twelve_pack::PythonInstaller::Pip;
        }
        let project = Project::load(&f.root).unwrap_or_else(|d| panic!("{d:?}"));
        let r = pack(&project, &opts).unwrap_or_else(|e| panic!("{installer}: {e}"));
        assert!(
            r.tools.contains_key(installer),
            "{installer}: {:?}",
            r.tools
        );
        python_ok(&r, "import fastapi, uvicorn");
        assert_eq!(
            cache.path().join("uv").is_dir(),
            installer == "uv",
            "uv's wheel cache sits in the pack cache"
        );
    }
}

#[test]
fn fastapi_venv_has_uvicorn() {
    let f = fixture("fastapi");
    let r = f.pack();
    assert!(r.dir.join("app/app.py").is_file());
    python_ok(&r, "import fastapi, uvicorn");
    assert!(r
        .rock_paths()
        .iter()
        .any(|(p, h)| p == "/app" && *h == r.dir.join("app")));
}

#[test]
fn django_venv_has_django_and_gunicorn() {
    let f = fixture("django");
    let r = f.pack();
    // The rock's /django/app is the contents of the project's django_example/ dir.
    assert!(r.dir.join("app/manage.py").is_file());
    assert!(r.dir.join("app/django_example/wsgi.py").is_file());
    python_ok(&r, "import django, gunicorn");
    assert!(r.rock_paths().iter().any(|(p, _)| p == "/django/app"));
}

#[test]
fn express_installs_node_modules() {
    let f = fixture("expressjs");
    let r = f.pack();
    assert!(r.dir.join("app/app.js").is_file());
    assert!(r
        .dir
        .join("app/node_modules/express/package.json")
        .is_file());
    assert!(
        r.path_env().ends_with("app/node_modules/.bin"),
        "{}",
        r.path_env()
    );
    assert!(r.tools.contains_key("npm"));
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(r.dir.join("release.json")).unwrap()).unwrap();
    assert_eq!(json["framework"], "expressjs");
    assert_eq!(json["paths"]["/app"], "app");
    assert_eq!(json["paths"]["/lib/node_modules/expressjs-example"], "app");
}

#[test]
fn go_binary_serves_health() {
    let f = fixture("go");
    let r = f.pack();
    let bin = r.dir.join("bin/go-example");
    assert!(bin.is_file());
    assert_eq!(r.binary.as_deref(), Some("bin/go-example"));
    let paths = r.rock_paths();
    assert_eq!(
        paths[0],
        ("/usr/local/bin/go-example".to_string(), bin.clone())
    );
    assert_eq!(r.path_env(), r.dir.join("bin").display().to_string());
    let port = free_port();
    let _child = Killed(
        Command::new(&bin)
            .current_dir(r.dir.join("app"))
            .env("APP_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let resp = http_get(port, "/health", Duration::from_secs(10));
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains(" 200 "),
        "{resp}"
    );
}

#[test]
fn go_compile_error_is_reported_and_leaves_nothing() {
    let f = fixture("go");
    fs::write(
        f.root.join("broken.go"),
        "package main\n\nfunc broken() { undefinedThing() }\n",
    )
    .unwrap();
    let project = Project::load(&f.root).unwrap();
    let err = pack(&project, &f.opts()).unwrap_err();
    let PackError::StepFailed { command, tail, .. } = &err else {
        panic!("{err}")
    };
    assert!(command.starts_with("go build"), "{command}");
    assert!(tail.contains("undefinedThing"), "{tail}");
    assert!(tail.lines().count() <= 20);
    let left: Vec<_> = fs::read_dir(&f.releases).unwrap().collect();
    assert!(left.is_empty(), "a failed pack leaves no release behind");
}

#[test]
fn spring_boot_jar_serves_health() {
    let f = fixture("spring-boot");
    let r = f.pack();
    let jar = r.dir.join(r.jar.as_deref().unwrap());
    assert_eq!(jar, r.dir.join("app/spring-boot-example.jar"));
    assert!(jar.is_file());
    // build.sh's output in target/ is not an input: packing again reuses.
    assert!(f.pack().reused);
    let port = free_port();
    let _child = Killed(
        Command::new("java")
            .current_dir(r.dir.join("app"))
            .args(["-jar", "spring-boot-example.jar"])
            .env("SERVER_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let resp = http_get(port, "/health", Duration::from_secs(20));
    assert!(resp.contains(" 200 "), "{resp}");
}

#[test]
fn spring_boot_without_build_sh_compiles_the_one_main_class() {
    let f = fixture("spring-boot");
    fs::remove_file(f.root.join("build.sh")).unwrap();
    // The example has three main classes: that is ambiguous.
    let project = Project::load(&f.root).unwrap();
    let err = pack(&project, &f.opts()).unwrap_err();
    assert!(matches!(err, PackError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("com.example.Application"), "{err}");

    let java = f.root.join("src/main/java/com/example");
    fs::remove_file(java.join("Worker.java")).unwrap();
    fs::remove_file(java.join("Scheduler.java")).unwrap();
    let project = Project::load(&f.root).unwrap();
    let r = match pack(&project, &f.opts()) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let jar = r.dir.join("app/spring-boot-example.jar");
    assert!(jar.is_file());
    // The Main-Class in the manifest is checked by running it.
    let port = free_port();
    let _child = Killed(
        Command::new("java")
            .args(["-jar"])
            .arg(&jar)
            .env("SERVER_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(http_get(port, "/health", Duration::from_secs(20)).contains(" 200 "));
}

/// Packs `f` and returns the result with the progress lines.
fn pack_seen(f: &Fixture) -> (Result<Release, PackError>, Vec<String>) {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let project = Project::load(&f.root).unwrap_or_else(|d| panic!("{d:?}"));
    let opts = f
        .opts()
        .with_progress(move |l| seen.lock().unwrap().push(l.to_string()));
    let r = pack(&project, &opts);
    let lines = lines.lock().unwrap().clone();
    (r, lines)
}

/// A pom.xml project is built as the spring-boot-framework extension builds it, with
/// `mvn package`, offline: its dependency and plugins come from Debian's Maven repository.
#[test]
fn maven_project_builds_offline_from_debians_repository() {
    let f = fixture("spring-boot-maven");
    let (r, seen) = pack_seen(&f);
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        seen.iter().any(|l| l.starts_with("mvn package")),
        "{seen:?}"
    );
    assert_eq!(
        r.jar.as_deref(),
        Some("app/spring-boot-maven-example-0.1.0.jar")
    );
    // Only the shaded jar: not the shade plugin's original-*.jar.
    let app: Vec<_> = fs::read_dir(r.dir.join("app"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(app.len(), 1, "{app:?}");
    assert!(
        r.tools.get("mvn").is_some_and(|v| v.contains("Maven")),
        "{:?}",
        r.tools
    );
    // Maven ran in a copy: the project has no target/ and the release no build dir.
    assert!(!f.root.join("target").exists());
    assert!(!r.dir.join(".build").exists());
    assert!(f.pack().reused);

    let port = free_port();
    let _child = Killed(
        Command::new("java")
            .current_dir(r.dir.join("app"))
            .args(["-jar", "spring-boot-maven-example-0.1.0.jar"])
            .env("SERVER_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // commons-lang3 is inside the jar: the greeting goes through it.
    let resp = http_get(port, "/", Duration::from_secs(20));
    assert!(
        resp.contains(" 200 ") && resp.contains("Hello from a jar built by Maven, OFFLINE"),
        "{resp}"
    );
}

/// A dependency Debian does not ship: one error naming it and Maven Central, with the
/// versions Debian has and the full log in a file; a prebuilt target/*.jar is then used.
#[test]
fn maven_missing_artifact_is_one_clear_error_and_a_prebuilt_jar_the_fallback() {
    let f = fixture("spring-boot-maven");
    let pom = f.root.join("pom.xml");
    let text = fs::read_to_string(&pom).unwrap();
    fs::write(
        &pom,
        text.replace("<version>3.12.0</version>", "<version>3.99.0</version>"),
    )
    .unwrap();
    let (r, _) = pack_seen(&f);
    let err = r.unwrap_err();
    let msg = err.to_string();
    let PackError::Offline { missing, log, .. } = &err else {
        panic!("not an Offline error: {msg}")
    };
    assert_eq!(
        missing,
        &vec!["org.apache.commons:commons-lang3:3.99.0".to_string()]
    );
    assert!(msg.contains("Maven Central"), "{msg}");
    assert!(msg.contains("/usr/share/maven-repo"), "{msg}");
    assert!(
        msg.contains("3.12.0"),
        "Debian's version is suggested: {msg}"
    );
    assert!(
        msg.lines().count() <= 6,
        "one short error, not Maven's log: {msg}"
    );
    assert!(msg.contains(&log.display().to_string()), "{msg}");
    let full = fs::read_to_string(log).unwrap();
    assert!(
        full.contains("BUILD FAILURE") && full.contains("[ERROR]"),
        "{full}"
    );
    let left: Vec<_> = fs::read_dir(&f.releases).unwrap().collect();
    assert!(left.is_empty(), "a failed pack leaves no release behind");

    // The jar built elsewhere (where Maven Central is reachable), left in target/.
    fs::create_dir_all(f.root.join("target")).unwrap();
    let prebuilt = f.root.join("target/prebuilt.jar");
    fs::copy(
        "/usr/share/maven-repo/org/apache/commons/commons-lang3/3.12.0/commons-lang3-3.12.0.jar",
        &prebuilt,
    )
    .unwrap();
    let (r, seen) = pack_seen(&f);
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.jar.as_deref(), Some("app/prebuilt.jar"));
    assert!(
        seen.iter().any(|l| l.contains("commons-lang3:3.99.0")
            && l.contains("using the prebuilt target/prebuilt.jar")),
        "{seen:?}"
    );
}

/// `./mvnw` runs instead of `mvn` when the project has it; a wrapper that cannot download
/// its Maven (no network here) is one error naming the distribution.
#[test]
fn maven_wrapper_is_used_and_a_failed_download_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture("spring-boot-maven");
    let url = "https://repo.maven.apache.org/maven2/org/apache/maven/apache-maven/3.9.6/apache-maven-3.9.6-bin.zip";
    fs::create_dir_all(f.root.join(".mvn/wrapper")).unwrap();
    fs::write(
        f.root.join(".mvn/wrapper/maven-wrapper.properties"),
        format!("distributionUrl={url}\n"),
    )
    .unwrap();
    // What a wrapper does before Maven runs: fetch the distribution it names.
    let mvnw = f.root.join("mvnw");
    fs::write(
        &mvnw,
        "#!/bin/sh\nurl=$(sed -n 's/^distributionUrl=//p' .mvn/wrapper/maven-wrapper.properties)\nd=$(mktemp -d)\ncurl -fsS -m 20 -o \"$d/maven.zip\" \"$url\" || { rm -rf \"$d\"; echo \"Failed to fetch $url\"; exit 1; }\n",
    )
    .unwrap();
    fs::set_permissions(&mvnw, fs::Permissions::from_mode(0o644)).unwrap();
    let (r, _) = pack_seen(&f);
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("mvnw is not executable") && msg.contains("chmod +x mvnw"),
        "{msg}"
    );
    fs::set_permissions(&mvnw, fs::Permissions::from_mode(0o755)).unwrap();
    let (r, _) = pack_seen(&f);
    let err = r.unwrap_err();
    let msg = err.to_string();
    let PackError::Offline { missing, .. } = &err else {
        panic!("not an Offline error: {msg}")
    };
    assert_eq!(missing, &vec![url.to_string()]);
    assert!(msg.contains("./mvnw needs to download Maven"), "{msg}");

    // A wrapper whose Maven is there (here: the system's) builds the jar.
    fs::write(&mvnw, "#!/bin/sh\necho wrapper ran\nexec mvn \"$@\"\n").unwrap();
    let (r, seen) = pack_seen(&f);
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        seen.iter().any(|l| l.starts_with("./mvnw package")),
        "{seen:?}"
    );
    assert_eq!(
        r.jar.as_deref(),
        Some("app/spring-boot-maven-example-0.1.0.jar")
    );
}

/// Gradle: `gradle bootJar` needs Gradle on PATH (Debian's is too old for Java 17, so
/// this machine has none), and `./gradlew` that cannot download its distribution is one
/// error naming it.
#[test]
fn gradle_projects_need_gradle_or_a_wrapper_that_can_download_it() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture("spring-boot-maven");
    fs::remove_file(f.root.join("pom.xml")).unwrap();
    fs::write(
        f.root.join("build.gradle"),
        "plugins { id 'org.springframework.boot' version '3.2.0' }\n",
    )
    .unwrap();
    if std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("gradle").is_file()))
        != Some(true)
    {
        let (r, _) = pack_seen(&f);
        let err = r.unwrap_err();
        assert!(
            matches!(&err, PackError::ToolMissing { package, .. } if package == "gradle"),
            "{err}"
        );
    }
    let url = "https://services.gradle.org/distributions/gradle-8.5-bin.zip";
    fs::create_dir_all(f.root.join("gradle/wrapper")).unwrap();
    fs::write(
        f.root.join("gradle/wrapper/gradle-wrapper.properties"),
        "distributionUrl=https\\://services.gradle.org/distributions/gradle-8.5-bin.zip\n",
    )
    .unwrap();
    let gradlew = f.root.join("gradlew");
    fs::write(
        &gradlew,
        format!("#!/bin/sh\necho 'Downloading {url}'\nd=$(mktemp -d)\ncurl -fsS -m 20 -o \"$d/g.zip\" '{url}'; s=$?; rm -rf \"$d\"; exit $s\n"),
    )
    .unwrap();
    fs::set_permissions(&gradlew, fs::Permissions::from_mode(0o755)).unwrap();
    let (r, _) = pack_seen(&f);
    let err = r.unwrap_err();
    let msg = err.to_string();
    let PackError::Offline { missing, .. } = &err else {
        panic!("not an Offline error: {msg}")
    };
    assert_eq!(missing, &vec![url.to_string()]);
    assert!(msg.contains("./gradlew needs to download Gradle"), "{msg}");
}
