//! Spring Boot: the application jar, built the way rockcraft's spring-boot-framework
//! extension builds it: `mvn package` (`./mvnw package` when the project has the wrapper)
//! with a `pom.xml`, `gradle bootJar` (`./gradlew bootJar`) with a `build.gradle`, then the
//! one application jar of `target/` (`build/libs/`). Maven runs against Debian's Maven
//! repository (`/usr/share/maven-repo`) through a settings file twelve writes in its
//! cache, so builds need no network; an artifact Debian does not ship is one clear error.
//!
//! Fallbacks, in this order: a `build.sh` (runs instead of Maven or Gradle), a prebuilt
//! `target/*.jar` (used as is without a build file, or when the build cannot run offline),
//! and `javac` over `src/main/java` (no build file, no jar).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use twelve_project::{Framework, Project};

use crate::inputs::{self, Entry};
use crate::run::{self, require_tool, run, version_of};
use crate::{next_suffix, PackError, PackOptions, Release};

/// Debian's Maven repository: Debian's Java libraries and Maven plugins, as a Maven layout.
pub(crate) const DEBIAN_MAVEN_REPO: &str = "/usr/share/maven-repo";

/// The Maven repository builds resolve from: `$TWELVE_MAVEN_REPO` (a URL, for example
/// `https://repo.maven.apache.org/maven2` where Maven Central is reachable), else Debian's.
fn maven_repo_url() -> String {
    match std::env::var("TWELVE_MAVEN_REPO") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => format!("file://{DEBIAN_MAVEN_REPO}"),
    }
}

fn is_debian_repo(url: &str) -> bool {
    url.trim_end_matches('/') == format!("file://{DEBIAN_MAVEN_REPO}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Maven,
    Gradle,
}

/// How the extension builds the project: Maven or Gradle, with the wrapper or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BuildSystem {
    tool: Tool,
    wrapper: bool,
}

/// The project's build, checked with the extension's rules: one of `pom.xml` and
/// `build.gradle` (twelve also takes `build.gradle.kts`), one of `mvnw` and `gradlew`, and
/// the wrapper executable. `None`: neither build file.
fn build_system(root: &Path) -> Result<Option<BuildSystem>, PackError> {
    let pom = root.join("pom.xml").is_file();
    let gradle = ["build.gradle", "build.gradle.kts"]
        .into_iter()
        .find(|f| root.join(f).is_file());
    if let (true, Some(g)) = (pom, gradle) {
        return Err(PackError::Invalid(format!(
            "both pom.xml and {g} exist in {}: a Spring Boot project is built with Maven or Gradle, not both\nhelp: remove the build file you do not use",
            root.display()
        )));
    }
    let (mvnw, gradlew) = (root.join("mvnw"), root.join("gradlew"));
    if mvnw.exists() && gradlew.exists() {
        return Err(PackError::Invalid(format!(
            "both mvnw and gradlew exist in {}: keep the wrapper of the build you use",
            root.display()
        )));
    }
    for w in [&mvnw, &gradlew] {
        if let Ok(meta) = fs::metadata(w) {
            if meta.permissions().mode() & 0o111 == 0 {
                let name = w.file_name().unwrap_or_default().to_string_lossy();
                return Err(PackError::Invalid(format!(
                    "{name} is not executable\nhelp: chmod +x {name}"
                )));
            }
        }
    }
    Ok(if pom {
        Some(BuildSystem {
            tool: Tool::Maven,
            wrapper: mvnw.is_file(),
        })
    } else if gradle.is_some() {
        Some(BuildSystem {
            tool: Tool::Gradle,
            wrapper: gradlew.is_file(),
        })
    } else {
        None
    })
}

/// True for a Gradle project, whose `build/` and `.gradle/` are build output, not sources.
pub(crate) fn is_gradle_project(root: &Path) -> bool {
    root.join("build.gradle").is_file() || root.join("build.gradle.kts").is_file()
}

/// The application jars of a build output directory: `*.jar` minus the side jars
/// (`*-plain`, `*-sources`, `*-javadoc`, `*-tests`, and the shade plugin's `original-*`).
fn app_jars(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return vec![];
    };
    let mut jars: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            p.is_file()
                && n.ends_with(".jar")
                && !n.starts_with("original-")
                && !["-plain.jar", "-sources.jar", "-javadoc.jar", "-tests.jar"]
                    .iter()
                    .any(|s| n.ends_with(s))
        })
        .collect();
    jars.sort();
    jars
}

/// The one application jar of `dir`, `None` when there is none, an error when several.
fn one_jar(dir: &Path, shown: &str, after: &str) -> Result<Option<PathBuf>, PackError> {
    let jars = app_jars(dir);
    match jars.len() {
        0 => Ok(None),
        1 => Ok(jars.into_iter().next()),
        _ => Err(PackError::Invalid(format!(
            "{after}{shown} holds several application jars ({}); leave exactly one",
            jars.iter()
                .filter_map(|j| j.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// For a Spring Boot project without build.sh, the prebuilt `target/*.jar` is an input of
/// the release. Several jars are an error unless a build file says how to build the jar
/// (then none is the fallback).
pub(crate) fn prebuilt_jar_input(project: &Project) -> Result<Option<PathBuf>, PackError> {
    if project.framework != Framework::SpringBoot || project.root.join("build.sh").is_file() {
        return Ok(None);
    }
    let target = project.root.join("target");
    if matches!(build_system(&project.root), Ok(Some(_))) {
        let jars = app_jars(&target);
        return Ok((jars.len() == 1).then(|| jars[0].clone()));
    }
    one_jar(&target, "target/", "")
}

pub(crate) fn spring(
    project: &Project,
    entries: &[Entry],
    dir: &Path,
    cache_dir: &Path,
    opts: &PackOptions,
    release: &mut Release,
) -> Result<(), PackError> {
    let root = &project.root;
    if let Some(v) = run::which("javac").and_then(|j| version_of(&j, &["-version"])) {
        release.tools.insert("javac".into(), v);
    }
    let app = dir.join("app");
    let jar_name = if root.join("build.sh").is_file() {
        opts.say("bash build.sh");
        let mut cmd = Command::new("bash");
        cmd.current_dir(root).arg("build.sh");
        run(&mut cmd, "bash build.sh", "bash")?;
        let jar = one_jar(&root.join("target"), "target/", "after build.sh, ")?
            .ok_or_else(|| PackError::Invalid("build.sh ran but left no jar in target/".into()))?;
        copy_jar(&jar, &app)?
    } else if let Some(bs) = build_system(root)? {
        let built = build_jar(project, bs, entries, dir, cache_dir, opts, release);
        let jar = match built {
            Ok(jar) => jar,
            Err(e @ PackError::Offline { .. }) => match prebuilt_jar_input(project)? {
                Some(prebuilt) => {
                    let first = e.to_string().lines().next().unwrap_or_default().to_string();
                    opts.say(&format!(
                        "{first}\nusing the prebuilt target/{} instead",
                        prebuilt.file_name().unwrap_or_default().to_string_lossy()
                    ));
                    prebuilt
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        copy_jar(&jar, &app)?
    } else if let Some(jar) = one_jar(&root.join("target"), "target/", "")? {
        opts.say("using the jar in target/");
        copy_jar(&jar, &app)?
    } else {
        compile_java(project, dir, &app, opts)?
    };
    let _ = fs::remove_dir_all(dir.join(".build"));
    release.jar = Some(format!("app/{jar_name}"));
    Ok(())
}

fn copy_jar(jar: &Path, app: &Path) -> Result<String, PackError> {
    let name = jar
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app.jar".into());
    fs::copy(jar, app.join(&name))
        .map_err(|e| PackError::io(format!("copying {}", jar.display()), e))?;
    Ok(name)
}

fn mkdir(p: &Path) -> Result<(), PackError> {
    fs::create_dir_all(p).map_err(|e| PackError::io(format!("creating {}", p.display()), e))
}

/// Builds the jar with Maven or Gradle in a copy of the project (`<release>/.build/src`),
/// so the user's tree gets no `target/` or `dependency-reduced-pom.xml`. Returns the jar.
fn build_jar(
    project: &Project,
    bs: BuildSystem,
    entries: &[Entry],
    dir: &Path,
    cache_dir: &Path,
    opts: &PackOptions,
    release: &mut Release,
) -> Result<PathBuf, PackError> {
    let src = dir.join(".build/src");
    mkdir(&src)?;
    inputs::copy_entries(entries, &src)?;
    let logs = cache_dir.join("logs");
    mkdir(&logs)?;
    match bs.tool {
        Tool::Maven => maven(project, bs.wrapper, &src, cache_dir, &logs, opts, release),
        Tool::Gradle => gradle(project, bs.wrapper, &src, &logs, opts),
    }
}

// ---------------------------------------------------------------- Maven

/// The settings file every build uses (`-s`): the local repository in the pack cache and
/// one mirror of every repository, the Maven repository of [`maven_repo_url`]. Debian's
/// repository has no checksums, so they are not asked for there.
fn maven_settings(cache_dir: &Path, url: &str) -> Result<PathBuf, PackError> {
    let dir = cache_dir.join("maven");
    mkdir(&dir)?;
    let local = dir.join("repository");
    // A local directory: no checksums, and looked at again every build (an artifact
    // missing before may have been installed since); a remote one: Maven's defaults.
    let (checksums, update) = if url.starts_with("file:") {
        ("ignore", "always")
    } else {
        ("warn", "daily")
    };
    let repo = |tag: &str| {
        format!(
            "        <{tag}>\n          <id>central</id>\n          <url>{url}</url>\n          <releases><updatePolicy>{update}</updatePolicy><checksumPolicy>{checksums}</checksumPolicy></releases>\n          <snapshots><enabled>false</enabled></snapshots>\n        </{tag}>\n"
        )
    };
    let text = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- Written by twelve pack: Maven builds resolve every artifact from {url}. -->\n<settings xmlns=\"http://maven.apache.org/SETTINGS/1.0.0\">\n  <localRepository>{}</localRepository>\n  <interactiveMode>false</interactiveMode>\n  <mirrors>\n    <mirror>\n      <id>twelve</id>\n      <mirrorOf>*</mirrorOf>\n      <url>{url}</url>\n    </mirror>\n  </mirrors>\n  <profiles>\n    <profile>\n      <id>twelve</id>\n      <repositories>\n{}      </repositories>\n      <pluginRepositories>\n{}      </pluginRepositories>\n    </profile>\n  </profiles>\n  <activeProfiles>\n    <activeProfile>twelve</activeProfile>\n  </activeProfiles>\n</settings>\n",
        xml_escape(&local.display().to_string()),
        repo("repository"),
        repo("pluginRepository"),
    );
    let hash = &crate::inputs::hex(&sha2_digest(text.as_bytes()))[..12];
    let path = dir.join(format!("settings-{hash}.xml"));
    if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let tmp = dir.join(format!("settings-{hash}.xml.tmp-{}", next_suffix()));
        fs::write(&tmp, &text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| PackError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(path)
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).to_vec()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn maven(
    project: &Project,
    wrapper: bool,
    src: &Path,
    cache_dir: &Path,
    logs: &Path,
    opts: &PackOptions,
    release: &mut Release,
) -> Result<PathBuf, PackError> {
    let (program, shown) = if wrapper {
        (src.join("mvnw"), "./mvnw package")
    } else {
        let mvn = require_tool("mvn", "maven")?;
        if let Some(v) = version_of(&mvn, &["-B", "--version"]) {
            release.tools.insert("mvn".into(), strip_ansi(&v));
        }
        (mvn, "mvn package")
    };
    let url = maven_repo_url();
    if is_debian_repo(&url) && !Path::new(DEBIAN_MAVEN_REPO).is_dir() {
        return Err(PackError::ToolMissing {
            tool: "Debian's Maven repository".into(),
            package: "maven maven-repo-helper".into(),
            why: format!("{DEBIAN_MAVEN_REPO} does not exist"),
        });
    }
    let settings = maven_settings(cache_dir, &url)?;
    let log = logs.join(format!("{}-{}.maven.log", project.name, next_suffix()));
    let mut cmd = Command::new(&program);
    cmd.current_dir(src)
        .arg("-B")
        .arg("-s")
        .arg(&settings)
        .arg("package");
    // Maven starts faster with the client compiler and the serial collector (5 s, not 8,
    // for a small project); a MAVEN_OPTS of the user's wins.
    if std::env::var_os("MAVEN_OPTS").is_none() {
        cmd.env("MAVEN_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC");
    }
    opts.say(&format!("{shown} (artifacts from {url})"));
    let status = run::run_logged(&mut cmd, shown, "maven", &log)?;
    if !status.success() {
        let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
        return Err(maven_failure(
            src,
            wrapper,
            shown,
            &status.to_string(),
            &text,
            &url,
            log,
        ));
    }
    let _ = fs::remove_file(&log);
    one_jar(&src.join("target"), "target/", &format!("after `{shown}`, "))?.ok_or_else(|| {
        PackError::Invalid(format!(
            "`{shown}` succeeded but left no application jar in target/ (is the pom's packaging `jar`?)"
        ))
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The artifacts a failed Maven build could not get, as `group:artifact:version`
/// (`group:artifact` for a plugin whose version Maven could not resolve), in the order
/// of the log, without duplicates. Only `[ERROR]` lines count.
pub(crate) fn maven_missing_artifacts(log: &str) -> Vec<String> {
    const BEFORE: &[&str] = &[
        "Could not find artifact ",
        "Failure to find ",
        "Could not transfer artifact ",
        "and the artifact ",
        "Error resolving version for plugin '",
    ];
    // "… X was not found in URL during a previous attempt" (a cached failure).
    const AFTER: &str = " was not found in ";
    let mut out: Vec<String> = Vec::new();
    for line in log.lines().filter(|l| l.starts_with("[ERROR]")) {
        let mut rest = line;
        while let Some(i) = rest.find(AFTER) {
            let token = rest[..i]
                .rsplit(char::is_whitespace)
                .next()
                .unwrap_or_default();
            if let Some(coord) = gav(token) {
                if !out.contains(&coord) {
                    out.push(coord);
                }
            }
            rest = &rest[i + AFTER.len()..];
        }
        for pat in BEFORE {
            let mut rest = line;
            while let Some(i) = rest.find(pat) {
                rest = &rest[i + pat.len()..];
                let token: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\'' && *c != ',')
                    .collect();
                if let Some(coord) = gav(&token) {
                    if !out.contains(&coord) {
                        out.push(coord);
                    }
                }
            }
        }
    }
    out
}

/// `g:a:type:version` / `g:a:type:classifier:version` / `g:a:version` / `g:a` as
/// `g:a:version` (or `g:a`).
fn gav(token: &str) -> Option<String> {
    let token = token.trim_end_matches(['.', ':', ')', ';']);
    let parts: Vec<&str> = token.split(':').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    match parts.as_slice() {
        [g, a] => Some(format!("{g}:{a}")),
        [g, a, v] => Some(format!("{g}:{a}:{v}")),
        [g, a, _, v] | [g, a, _, _, v] => Some(format!("{g}:{a}:{v}")),
        _ => None,
    }
}

/// Debian packages of the Maven plugins `package` needs, by artifact id.
fn debian_package_of(artifact: &str) -> Option<&'static str> {
    Some(match artifact {
        "maven-compiler-plugin" => "libmaven-compiler-plugin-java",
        "maven-resources-plugin" => "libmaven-resources-plugin-java",
        "maven-jar-plugin" => "libmaven-jar-plugin-java",
        "maven-surefire-plugin" => "libsurefire-java",
        "maven-install-plugin" => "libmaven-install-plugin-java",
        "maven-shade-plugin" => "libmaven-shade-plugin-java",
        "maven-assembly-plugin" => "libmaven-assembly-plugin-java",
        "maven-dependency-plugin" => "libmaven-dependency-plugin-java",
        "maven-war-plugin" => "libmaven-war-plugin-java",
        "maven-antrun-plugin" => "libmaven-antrun-plugin-java",
        "maven-clean-plugin" => "libmaven-clean-plugin-java",
        "commons-lang3" => "libcommons-lang3-java",
        _ => return None,
    })
}

/// The versions of `group:artifact` Debian's repository has (its `debian` alias left out).
fn debian_versions(coord: &str) -> Vec<String> {
    let mut parts = coord.split(':');
    let (Some(g), Some(a)) = (parts.next(), parts.next()) else {
        return vec![];
    };
    let dir = Path::new(DEBIAN_MAVEN_REPO)
        .join(g.replace('.', "/"))
        .join(a);
    let Ok(rd) = fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "debian" && !n.ends_with(".x"))
        .collect();
    v.sort();
    v
}

/// The first `distributionUrl` of a wrapper's properties file (`\:` unescaped).
fn distribution_url(props: &Path) -> Option<String> {
    let text = fs::read_to_string(props).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "distributionUrl").then(|| v.trim().replace("\\:", ":"))
    })
}

/// True when a wrapper's output shows it failed to download its distribution.
fn wrapper_download_failed(log: &str) -> bool {
    let lower = log.to_ascii_lowercase();
    [
        "could not resolve host",
        "unable to resolve host",
        "unknownhostexception",
        "connectexception",
        "sockettimeoutexception",
        "failed to fetch",
        "could not install gradle distribution",
        "downloading https://",
        "downloading http://",
        "failed to download",
        "couldn't download",
        "network is unreachable",
        "connection refused",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

fn maven_failure(
    src: &Path,
    wrapper: bool,
    shown: &str,
    status: &str,
    text: &str,
    url: &str,
    log: PathBuf,
) -> PackError {
    // The wrapper failed before Maven ran (no Maven output): it could not get Maven.
    let maven_ran = text.contains("[INFO]") || text.contains("[ERROR]");
    if wrapper && !maven_ran && wrapper_download_failed(text) {
        let dist = distribution_url(&src.join(".mvn/wrapper/maven-wrapper.properties"))
            .unwrap_or_else(|| "the Maven distribution".into());
        return PackError::Offline {
            missing: vec![dist.clone()],
            message: format!(
                "./mvnw needs to download Maven ({dist}, from .mvn/wrapper/maven-wrapper.properties), and the network is not reachable from here\nhelp: delete mvnw to build with this machine's Maven (`mvn`, Debian package maven), or run ./mvnw once where the network is reachable so that Maven is in ~/.m2/wrapper"
            ),
            log,
        };
    }
    let missing = maven_missing_artifacts(text);
    if !missing.is_empty() {
        let list = missing.join(", ");
        let (is, it_needs) = if missing.len() == 1 {
            ("is", "it needs")
        } else {
            ("are", "they need")
        };
        let mut message = if is_debian_repo(url) {
            format!(
                "cannot build the jar offline: Maven needs {list}, which {is} not in Debian's Maven repository ({DEBIAN_MAVEN_REPO}), the only repository twelve's offline builds use: {it_needs} Maven Central, which is not reachable here"
            )
        } else {
            format!(
                "cannot build the jar: Maven needs {list}, which {is} not in {url} (TWELVE_MAVEN_REPO) or it cannot be reached"
            )
        };
        for coord in &missing {
            let artifact = coord.split(':').nth(1).unwrap_or_default();
            let versions = debian_versions(coord);
            let ga: String = coord.splitn(3, ':').take(2).collect::<Vec<_>>().join(":");
            if !versions.is_empty() {
                message.push_str(&format!(
                    "\nhelp: Debian's repository has {ga} {}: use one of those versions in pom.xml",
                    versions.join(", ")
                ));
            } else if let Some(pkg) = debian_package_of(artifact) {
                message.push_str(&format!(
                    "\nhelp: Debian packages {ga}: apt-get install -y {pkg}"
                ));
            }
        }
        message.push_str("\nhelp: where Maven Central is reachable, set TWELVE_MAVEN_REPO=https://repo.maven.apache.org/maven2; or build the jar there and leave it in target/ (twelve packs a prebuilt target/*.jar when the build cannot run offline)");
        return PackError::Offline {
            missing,
            message,
            log,
        };
    }
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("[ERROR]"))
        .take_while(|l| !l.contains("To see the full stack trace"))
        .filter(|l| !l.trim_end().ends_with("[ERROR]"))
        .take(15)
        .collect();
    let detail = if errors.is_empty() {
        run::tail(text, 20)
    } else {
        errors.join("\n")
    };
    PackError::BuildFailed {
        summary: format!("`{shown}` failed ({status}):\n{detail}"),
        log,
    }
}

// ---------------------------------------------------------------- Gradle

fn gradle(
    project: &Project,
    wrapper: bool,
    src: &Path,
    logs: &Path,
    opts: &PackOptions,
) -> Result<PathBuf, PackError> {
    let (program, shown) = if wrapper {
        (src.join("gradlew"), "./gradlew bootJar")
    } else {
        (require_tool("gradle", "gradle")?, "gradle bootJar")
    };
    let log = logs.join(format!("{}-{}.gradle.log", project.name, next_suffix()));
    let mut cmd = Command::new(&program);
    cmd.current_dir(src)
        .args(["bootJar", "--no-daemon", "--console=plain"]);
    opts.say(shown);
    let status = run::run_logged(&mut cmd, shown, "gradle", &log)?;
    if !status.success() {
        let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
        return Err(gradle_failure(
            src,
            wrapper,
            shown,
            &status.to_string(),
            &text,
            log,
        ));
    }
    let _ = fs::remove_file(&log);
    one_jar(
        &src.join("build/libs"),
        "build/libs/",
        &format!("after `{shown}`, "),
    )?
    .ok_or_else(|| {
        PackError::Invalid(format!(
            "`{shown}` succeeded but left no application jar in build/libs/"
        ))
    })
}

/// What a failed Gradle build could not download: `group:artifact:version` of
/// "Could not resolve/find" lines, and plugins "Plugin [id: 'x', version: 'v']".
pub(crate) fn gradle_missing(log: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in log.lines().map(|l| l.trim().trim_start_matches(['>', ' '])) {
        for pat in ["Could not resolve ", "Could not find "] {
            if let Some(rest) = line.strip_prefix(pat) {
                let token: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                if let Some(c) = gav(&token).filter(|c| c.matches(':').count() == 2) {
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
        }
        if let Some(i) = line.find("Plugin [id: '") {
            let rest = &line[i + "Plugin [id: '".len()..];
            if let Some((id, after)) = rest.split_once('\'') {
                let version = after
                    .split_once("version: '")
                    .and_then(|(_, v)| v.split_once('\''))
                    .map(|(v, _)| v);
                let c = match version {
                    Some(v) => format!("plugin {id} {v}"),
                    None => format!("plugin {id}"),
                };
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

fn gradle_failure(
    src: &Path,
    wrapper: bool,
    shown: &str,
    status: &str,
    text: &str,
    log: PathBuf,
) -> PackError {
    let gradle_ran = text.contains("> Task ")
        || text.contains("* What went wrong")
        || text.contains("BUILD FAILED");
    if wrapper && !gradle_ran && wrapper_download_failed(text) {
        let dist = distribution_url(&src.join("gradle/wrapper/gradle-wrapper.properties"))
            .unwrap_or_else(|| "the Gradle distribution".into());
        return PackError::Offline {
            missing: vec![dist.clone()],
            message: format!(
                "./gradlew needs to download Gradle ({dist}, from gradle/wrapper/gradle-wrapper.properties), and the network is not reachable from here\nhelp: run ./gradlew once where the network is reachable so that Gradle is in ~/.gradle/wrapper, or build the jar there and leave it in target/ (twelve packs a prebuilt target/*.jar when the build cannot run offline)"
            ),
            log,
        };
    }
    let missing = gradle_missing(text);
    if !missing.is_empty() {
        let list = missing.join(", ");
        return PackError::Offline {
            message: format!(
                "cannot build the jar offline: Gradle needs {list} from Maven Central or the Gradle Plugin Portal, which are not reachable from here\nhelp: build the jar where they are reachable and leave it in target/ (twelve packs a prebuilt target/*.jar when the build cannot run offline)"
            ),
            missing,
            log,
        };
    }
    let wrong: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("* What went wrong"))
        .skip(1)
        .take_while(|l| !l.starts_with("* Try"))
        .filter(|l| !l.trim().is_empty())
        .take(15)
        .collect();
    let detail = if wrong.is_empty() {
        run::tail(text, 20)
    } else {
        wrong.join("\n")
    };
    PackError::BuildFailed {
        summary: format!("`{shown}` failed ({status}):\n{detail}"),
        log,
    }
}

// ---------------------------------------------------------------- javac

/// `javac` every source under src/main/java and `jar` them with the one main class.
fn compile_java(
    project: &Project,
    dir: &Path,
    app: &Path,
    opts: &PackOptions,
) -> Result<String, PackError> {
    let src = project.root.join("src/main/java");
    let mut sources = Vec::new();
    collect_java(&src, &mut sources);
    sources.sort();
    if sources.is_empty() {
        return Err(PackError::Invalid(format!(
            "nothing to pack for Spring Boot in {}: no pom.xml or build.gradle, no build.sh, no jar in target/ and no sources in src/main/java\nhelp: add the pom.xml (Maven) or build.gradle (Gradle) the spring-boot-framework extension builds with",
            project.root.display()
        )));
    }
    let mains: Vec<String> = sources.iter().filter_map(|f| main_class(&src, f)).collect();
    let main = match mains.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(PackError::Invalid(
                "no class in src/main/java has a `public static void main` method".into(),
            ))
        }
        many => {
            return Err(PackError::Invalid(format!(
                "several classes have a main method ({}); add a pom.xml (or a build.sh) that builds the jar with the right Main-Class",
                many.join(", ")
            )))
        }
    };
    let javac = require_tool("javac", "openjdk-17-jdk-headless")?;
    let jar_tool = require_tool("jar", "openjdk-17-jdk-headless")?;
    let classes = dir.join(".build/classes");
    mkdir(&classes)?;
    opts.say(&format!("javac ({} files)", sources.len()));
    let mut cmd = Command::new(&javac);
    cmd.arg("-d").arg(&classes).args(&sources);
    run(
        &mut cmd,
        "javac -d classes src/main/java/**/*.java",
        "openjdk-17-jdk-headless",
    )?;
    let name = format!("{}.jar", project.name);
    let shown = format!("jar --create --file app/{name} --main-class {main}");
    opts.say(&shown);
    let mut cmd = Command::new(&jar_tool);
    cmd.arg("--create")
        .arg("--file")
        .arg(app.join(&name))
        .arg("--main-class")
        .arg(&main)
        .arg("-C")
        .arg(&classes)
        .arg(".");
    run(&mut cmd, &shown, "openjdk-17-jdk-headless")?;
    Ok(name)
}

fn collect_java(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            collect_java(&p, out);
        } else if p.extension().is_some_and(|x| x == "java") {
            out.push(p);
        }
    }
}

/// The fully qualified class of `file` when it declares `public static void main(`.
fn main_class(src: &Path, file: &Path) -> Option<String> {
    let text = fs::read_to_string(file).ok()?;
    let squeezed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let has_main = squeezed.contains("public static void main(")
        || squeezed.contains("public static void main (")
        || squeezed.contains("static public void main(");
    if !has_main {
        return None;
    }
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    Some(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_main_classes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src/main/java");
        fs::create_dir_all(src.join("com/x")).unwrap();
        let f = src.join("com/x/App.java");
        fs::write(
            &f,
            "package com.x;\npublic class App {\n  public static void main(String[] a) {}\n}\n",
        )
        .unwrap();
        let g = src.join("com/x/Lib.java");
        fs::write(&g, "package com.x;\npublic class Lib {}\n").unwrap();
        assert_eq!(main_class(&src, &f).as_deref(), Some("com.x.App"));
        assert_eq!(main_class(&src, &g), None);
    }

    /// Lines as Maven 3.8 prints them for a missing dependency, parent, plugin and a
    /// version-less plugin.
    #[test]
    fn maven_missing_artifacts_are_named_group_artifact_version() {
        let log = "\
[INFO] Scanning for projects...
[WARNING] The POM for org.x:y:jar:1 is missing, no dependency information available
[ERROR] Failed to execute goal on project demo: Could not resolve dependencies for project com.example:demo:jar:0.1.0: Could not find artifact org.apache.commons:commons-lang3:jar:3.99.0 in twelve (file:///usr/share/maven-repo) -> [Help 1]
[ERROR]   Non-resolvable parent POM for com.example:demo:0.1.0: Could not find artifact org.springframework.boot:spring-boot-starter-parent:pom:3.2.0 in twelve (file:///usr/share/maven-repo) and 'parent.relativePath' points at no local POM @ line 5, column 11
[ERROR] Plugin org.springframework.boot:spring-boot-maven-plugin:3.2.0 or one of its dependencies could not be resolved: Failure to find org.springframework.boot:spring-boot-maven-plugin:jar:3.2.0 in file:///usr/share/maven-repo was cached in the local repository
[ERROR] Error resolving version for plugin 'org.codehaus.mojo:exec-maven-plugin' from the repositories [local (/c), twelve (file:///usr/share/maven-repo)]: Plugin not found in any plugin repository -> [Help 1]
[ERROR] Failed to execute goal on project demo: Could not find artifact org.apache.commons:commons-lang3:jar:3.99.0 in twelve
[ERROR] Could not transfer artifact io.netty:netty-all:jar:linux-x86_64:4.1.0 from/to twelve (https://repo.maven.apache.org/maven2): Unknown host
[ERROR] Failed to execute goal on project x: Could not resolve dependencies for project com.example:x:jar:0.1.0: com.google.guava:guava:jar:99.0 was not found in file:///usr/share/maven-repo during a previous attempt. This failure was cached in the local repository
";
        assert_eq!(
            maven_missing_artifacts(log),
            vec![
                "org.apache.commons:commons-lang3:3.99.0",
                "org.springframework.boot:spring-boot-starter-parent:3.2.0",
                "org.springframework.boot:spring-boot-maven-plugin:3.2.0",
                "org.codehaus.mojo:exec-maven-plugin",
                "io.netty:netty-all:4.1.0",
                "com.google.guava:guava:99.0",
            ]
        );
        assert!(maven_missing_artifacts("[INFO] BUILD SUCCESS\n").is_empty());
    }

    /// What Gradle prints when it cannot resolve a dependency or a plugin (no real Gradle
    /// runs here: Debian's is too old for Java 17 and wrappers need the network).
    #[test]
    fn gradle_missing_dependencies_and_plugins_are_named() {
        let log = "\
FAILURE: Build failed with an exception.

* What went wrong:
Plugin [id: 'org.springframework.boot', version: '3.2.0'] was not found in any of the following sources:
> Could not resolve all files for configuration ':compileClasspath'.
   > Could not resolve org.apache.commons:commons-lang3:3.14.0.
";
        assert_eq!(
            gradle_missing(log),
            vec![
                "plugin org.springframework.boot 3.2.0",
                "org.apache.commons:commons-lang3:3.14.0",
            ]
        );
    }

    #[test]
    fn the_build_system_follows_the_extensions_rules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(build_system(root).unwrap(), None);
        fs::write(root.join("pom.xml"), "<project/>").unwrap();
        assert_eq!(
            build_system(root).unwrap(),
            Some(BuildSystem {
                tool: Tool::Maven,
                wrapper: false
            })
        );
        fs::write(root.join("mvnw"), "#!/bin/sh\n").unwrap();
        let err = build_system(root).unwrap_err().to_string();
        assert!(
            err.contains("mvnw is not executable") && err.contains("chmod +x mvnw"),
            "{err}"
        );
        fs::set_permissions(root.join("mvnw"), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(build_system(root).unwrap().unwrap().wrapper);
        fs::write(root.join("build.gradle"), "").unwrap();
        let err = build_system(root).unwrap_err().to_string();
        assert!(err.contains("both pom.xml and build.gradle"), "{err}");
        fs::remove_file(root.join("pom.xml")).unwrap();
        fs::remove_file(root.join("mvnw")).unwrap();
        assert_eq!(
            build_system(root).unwrap(),
            Some(BuildSystem {
                tool: Tool::Gradle,
                wrapper: false
            })
        );
    }

    #[test]
    fn wrapper_properties_give_the_distribution_url() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gradle-wrapper.properties");
        fs::write(
            &p,
            "distributionBase=GRADLE_USER_HOME\ndistributionUrl=https\\://services.gradle.org/distributions/gradle-8.5-bin.zip\n",
        )
        .unwrap();
        assert_eq!(
            distribution_url(&p).as_deref(),
            Some("https://services.gradle.org/distributions/gradle-8.5-bin.zip")
        );
    }
}
