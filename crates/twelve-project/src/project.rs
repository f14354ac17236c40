//! Loading a project directory into a `Project`: the three files, the framework's
//! extension folded in, and the facts of the file tree the rules need (migration scripts,
//! gevent, entry points), so that the rules themselves stay pure.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_saphyr::Spanned;
use twelve_layer::{Layer, LayerDoc, Override, Plan, Service, Startup};

use crate::charmcraft::*;
use crate::cos::{read_cos_custom, CosAssets};
use crate::diagnostic::{file_name, parse_yaml, Diagnostic, Loc};
use crate::framework::{Framework, ALL_FRAMEWORKS};
use crate::paas_config::{PaasCharmLine, PaasConfig};
use crate::rockcraft::{RockcraftFile, ROCKCRAFT_KEYS};

/// A project as twelve understands it.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub charm_dir: Option<PathBuf>,
    /// The rock's name (rockcraft.yaml `name`), the default app name.
    pub name: String,
    pub framework: Framework,
    /// Every config option, the extension's and the project's, in declaration order.
    pub options: IndexMap<String, ConfigOption>,
    /// Options the project itself declared (not from the extension).
    pub user_option_names: Vec<String>,
    pub requires: IndexMap<String, Relation>,
    pub actions: IndexMap<String, ActionDef>,
    /// The rock's services: the extension's main service with `services:` merged over it.
    pub services: IndexMap<String, Service>,
    pub paas_config: PaasConfig,
    /// The paas-charm rules the project runs under where 1.12 and main differ (ports and
    /// metrics variables): main when `paas-config.yaml` sets `port`, `metrics-port` or
    /// `metrics-path`, else 1.12. `twelve render --paas-charm` overrides it.
    pub paas_charm: PaasCharmLine,
    pub files: ProjectFiles,
    /// The charm's `cos_custom/` (alert rules, dashboards), checked.
    pub cos: CosAssets,
    /// Things the user should know (ignored keys, defaults taken).
    pub notes: Vec<Diagnostic>,
}

/// Facts read from the file tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectFiles {
    /// The project directory that becomes the rock's app directory.
    pub app_source_dir: PathBuf,
    /// Migration candidates present in the app directory, by file name.
    pub migrate: bool,
    pub migrate_sh: bool,
    pub migrate_py: bool,
    pub manage_py: bool,
    /// `gevent` is among the app's Python requirements.
    pub gevent: bool,
    /// What gunicorn's gevent worker imports is required: `gunicorn[gevent]`, or both
    /// `gevent` and `packaging` (gunicorn 22+ checks gevent's version with `packaging`,
    /// which only its `gevent` extra pulls in).
    pub gevent_worker: bool,
    /// Project action handlers found under `actions/`, by action name -> file name.
    pub action_handlers: IndexMap<String, String>,
}

pub struct LoadOptions {
    pub charm_dir: Option<PathBuf>,
}

impl Project {
    pub fn load(root: &Path) -> Result<Project, Diagnostic> {
        Project::load_with(root, &LoadOptions { charm_dir: None })
    }

    pub fn load_with(root: &Path, opts: &LoadOptions) -> Result<Project, Diagnostic> {
        let rock_path = root.join("rockcraft.yaml");
        if !root.is_dir() {
            return Err(
                Diagnostic::error(format!("{} is not a directory", root.display()))
                    .with_help("give the path of a project made with `twelve init` or rockcraft"),
            );
        }
        let rock_src = std::fs::read_to_string(&rock_path).map_err(|e| {
            Diagnostic::error(format!("{} is not a twelve project: cannot read rockcraft.yaml: {}", root.display(), io_reason(&e)))
                .with_help("create one with `twelve init --profile flask-framework` (or another profile; see `twelve init --help`)")
        })?;
        let rock: RockcraftFile = parse_yaml(&rock_path, &rock_src)?;
        let mut notes = unknown_keys(&rock_path, &rock_src, ROCKCRAFT_KEYS)?;

        let charm_dir = match &opts.charm_dir {
            Some(d) => {
                if !d.join("charmcraft.yaml").is_file() {
                    return Err(Diagnostic::error(format!(
                        "no charmcraft.yaml in {}",
                        d.display()
                    ))
                    .with_help("--charm-dir must name the directory that holds charmcraft.yaml"));
                }
                Some(d.clone())
            }
            None => [root.join("charm"), root.to_path_buf()]
                .into_iter()
                .find(|d| d.join("charmcraft.yaml").is_file()),
        };
        let (charm, charm_path, charm_src) = match &charm_dir {
            Some(dir) => {
                let path = dir.join("charmcraft.yaml");
                let src = std::fs::read_to_string(&path).map_err(|e| {
                    Diagnostic::error(format!("cannot read {}: {}", path.display(), io_reason(&e)))
                })?;
                let charm: CharmcraftFile = parse_yaml(&path, &src)?;
                notes.extend(unknown_keys(&path, &src, CHARMCRAFT_KEYS)?);
                (charm, path, src)
            }
            None => {
                notes.push(Diagnostic::note(
                    "no charmcraft.yaml in charm/ or the project root: using the framework extension's options only",
                ));
                (
                    CharmcraftFile::default(),
                    root.join("charm/charmcraft.yaml"),
                    String::new(),
                )
            }
        };

        let framework = framework_of(
            &rock_path,
            &rock_src,
            &rock.extensions,
            &charm_path,
            &charm_src,
            &charm.extensions,
        )?;
        let name = match &rock.name {
            Some(n) => n.value.clone(),
            None => {
                return Err(Diagnostic::error("rockcraft.yaml has no `name`")
                    .in_file(&rock_path)
                    .with_help("add `name: my-app` at the top of rockcraft.yaml"))
            }
        };
        if !valid_app_name(&name) {
            let loc = rock
                .name
                .as_ref()
                .and_then(|n| Loc::from_saphyr(&n.referenced));
            return Err(Diagnostic::error(format!("invalid project name {name:?}"))
                .in_file(&rock_path)
                .at(loc, &rock_src)
                .with_help("use lower-case letters, digits and dashes, starting with a letter (like `my-app`)"));
        }

        // Options: the extension's (when charmcraft.yaml uses it, or has no file), then the project's.
        let uses_extension = !charm.extensions.is_empty() || charm_dir.is_none();
        let mut options: IndexMap<String, ConfigOption> = IndexMap::new();
        let extension_options: IndexMap<&str, ConfigOption> =
            framework.extension_options().into_iter().collect();
        if uses_extension {
            for (n, o) in &extension_options {
                options.insert(n.to_string(), o.clone());
            }
        }
        let mut user_option_names = Vec::new();
        for (opt_key, mut option) in charm.config.clone().unwrap_or_default().options {
            let loc = Loc::from_saphyr(&opt_key.referenced);
            let opt_name = opt_key.value;
            option.location = loc;
            let err = |msg: String| {
                Diagnostic::error(msg)
                    .in_file(&charm_path)
                    .at(loc, &charm_src)
            };
            if option.required() && option.default.is_some() {
                return Err(err(format!("option {opt_name:?} has `optional: false` and a default"))
                    .with_help("Non-optional configuration options can not have default values: remove `default` or `optional: false`"));
            }
            let is_framework_option = extension_options.contains_key(opt_name.as_str());
            let reserved = [format!("{}-", framework.name()), "webserver-".to_string()];
            if !is_framework_option && reserved.iter().any(|p| opt_name.starts_with(p.as_str())) {
                return Err(err(format!("option {opt_name:?} uses a prefix reserved for the {framework} framework"))
                    .with_help(format!("options starting with `{}-` or `webserver-` are the framework's; rename it (e.g. `my-{}`)", framework.name(), opt_name)));
            }
            if let Some(default) = &option.default {
                if !default_matches(option.type_, default) {
                    return Err(err(format!(
                        "default of option {opt_name:?} is not a valid {}: {default}",
                        option.type_.as_str()
                    )));
                }
            }
            if !is_framework_option {
                user_option_names.push(opt_name.clone());
            }
            options.insert(opt_name, option);
        }

        // Relations: the project's requires, then the extension's (which the user may restate).
        let mut requires: IndexMap<String, Relation> = IndexMap::new();
        for (rel_key, mut rel) in charm.requires {
            rel.location = Loc::from_saphyr(&rel_key.referenced);
            requires.insert(rel_key.value, rel);
        }
        for (rel_name, rel) in framework.extension_relations() {
            requires.entry(rel_name.to_string()).or_insert(rel);
        }

        let mut actions: IndexMap<String, ActionDef> = framework
            .extension_actions()
            .into_iter()
            .map(|(n, a)| (n.to_string(), a))
            .collect();
        for (n, a) in charm.actions {
            actions.insert(n, a);
        }

        let paas_config = match &charm_dir {
            Some(dir) if dir.join("paas-config.yaml").is_file() => {
                let path = dir.join("paas-config.yaml");
                let src = std::fs::read_to_string(&path).map_err(|e| {
                    Diagnostic::error(format!("cannot read {}: {}", path.display(), io_reason(&e)))
                })?;
                let cfg: PaasConfig = if src.trim().is_empty() {
                    PaasConfig::default()
                } else {
                    parse_yaml(&path, &src)?
                };
                validate_paas_config(&cfg).map_err(|m| {
                    Diagnostic::error(format!("Invalid paas-config.yaml: {m}")).in_file(&path)
                })?;
                cfg
            }
            _ => PaasConfig::default(),
        };

        if paas_config.framework_logging_format.as_deref() == Some("json")
            && !framework.supports_json_logs()
        {
            // paas-charm raises CharmConfigInvalidError in every hook; twelve runs the
            // app with its server's own log format and says so.
            notes.push(Diagnostic::note(format!(
                "framework_logging_format: json is not supported for the {framework} framework (only flask, django and fastapi): its logs keep their own format"
            )));
        }

        let cos = match &charm_dir {
            Some(dir) => read_cos_custom(dir)?,
            None => CosAssets::default(),
        };

        let app_source_dir = app_source_dir(root, framework, &name);
        let files = read_files(root, &app_source_dir, framework, &actions);
        let entry = entry_point(&app_source_dir, framework, &name);

        let services = rock_services(&rock_path, &rock_src, framework, &entry, rock.services)?;

        Ok(Project {
            root: root.to_path_buf(),
            charm_dir,
            name,
            framework,
            options,
            user_option_names,
            requires,
            actions,
            services,
            paas_charm: paas_config.line(),
            paas_config,
            files,
            cos,
            notes,
        })
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        _ => e.to_string(),
    }
}

/// Juju application names: lower-case letters, digits and single dashes, starting with a
/// letter, not ending with a dash.
pub fn valid_app_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 60
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && !name.contains("--")
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn default_matches(t: OptionType, v: &serde_json::Value) -> bool {
    match t {
        OptionType::String | OptionType::Secret => v.is_string(),
        OptionType::Int => v.is_i64() || v.is_u64(),
        OptionType::Float => v.is_number(),
        OptionType::Boolean => v.is_boolean(),
    }
}

fn framework_of(
    rock_path: &Path,
    rock_src: &str,
    rock_ext: &[Spanned<String>],
    charm_path: &Path,
    charm_src: &str,
    charm_ext: &[Spanned<String>],
) -> Result<Framework, Diagnostic> {
    let known = ALL_FRAMEWORKS.map(|f| f.extension()).join(", ");
    let mut found: Option<(Framework, &Path)> = None;
    for (path, src, exts) in [
        (rock_path, rock_src, rock_ext),
        (charm_path, charm_src, charm_ext),
    ] {
        for ext in exts {
            let loc = Loc::from_saphyr(&ext.referenced);
            let Some(fw) = Framework::from_extension(&ext.value) else {
                return Err(
                    Diagnostic::error(format!("unknown extension {:?}", ext.value))
                        .in_file(path)
                        .at(loc, src)
                        .with_help(format!("twelve knows the extensions {known}")),
                );
            };
            match found {
                Some((other, _)) if other != fw => {
                    return Err(Diagnostic::error(format!(
                        "extension {} does not match {} used in {}",
                        fw.extension(),
                        other.extension(),
                        file_name(found.map(|f| f.1).unwrap_or(rock_path))
                    ))
                    .in_file(path)
                    .at(loc, src)
                    .with_help("rockcraft.yaml and charmcraft.yaml must use the same framework"));
                }
                _ => found = Some((fw, path)),
            }
        }
    }
    found.map(|(f, _)| f).ok_or_else(|| {
        Diagnostic::error("rockcraft.yaml names no framework extension")
            .in_file(rock_path)
            .with_help(format!(
                "add `extensions: [flask-framework]` (or one of {known})"
            ))
    })
}

/// Lists top-level keys the tools do not know, as notes pointing at them.
fn unknown_keys(path: &Path, src: &str, known: &[&str]) -> Result<Vec<Diagnostic>, Diagnostic> {
    if src.trim().is_empty() {
        return Ok(vec![]);
    }
    let keys: IndexMap<Spanned<String>, serde::de::IgnoredAny> = parse_yaml(path, src)?;
    Ok(keys
        .keys()
        .filter(|k| !known.contains(&k.value.as_str()))
        .map(|k| {
            Diagnostic::note(format!(
                "unknown key `{}` in {} is ignored",
                k.value,
                file_name(path)
            ))
            .in_file(path)
            .at(Loc::from_saphyr(&k.referenced), src)
        })
        .collect())
}

fn validate_paas_config(cfg: &PaasConfig) -> Result<(), String> {
    if let Some(p) = &cfg.prometheus {
        let mut seen = std::collections::HashSet::new();
        for job in &p.scrape_configs {
            if job.job_name.is_empty() {
                return Err("scrape config job_name must not be empty".into());
            }
            if !seen.insert(job.job_name.as_str()) {
                return Err(format!("duplicate job_name {:?}", job.job_name));
            }
            for sc in &job.static_configs {
                for t in &sc.targets {
                    if let Some(port) = t.strip_prefix("@scheduler:") {
                        if port.parse::<u16>().is_err() {
                            return Err(format!(
                                "target {t:?}: the port after @scheduler: must be a number"
                            ));
                        }
                    }
                }
            }
        }
    }
    if let Some(fmt) = &cfg.framework_logging_format {
        if fmt != "json" && fmt != "none" {
            return Err(format!(
                "framework_logging_format must be \"json\" or \"none\", not {fmt:?}"
            ));
        }
    }
    for (key, port) in [("port", cfg.port), ("metrics-port", cfg.metrics_port)] {
        if port == Some(0) {
            return Err(format!("{key} must be a port from 1 to 65535"));
        }
    }
    if let Some(path) = &cfg.metrics_path {
        if !path.starts_with('/') {
            return Err(format!("metrics-path {path:?} must start with /"));
        }
    }
    if let Some(h) = &cfg.healthcheck {
        if !h.path.starts_with('/') {
            return Err(format!("healthcheck path {:?} must start with /", h.path));
        }
    }
    Ok(())
}

/// Where the files that become the rock's app directory live in the project.
pub(crate) fn app_source_dir(root: &Path, framework: Framework, name: &str) -> PathBuf {
    match framework {
        // The django-framework extension packs `<name>/` (dashes as underscores) as /django/app.
        Framework::Django => {
            let snake = root.join(name.replace('-', "_"));
            if snake.is_dir() {
                snake
            } else {
                root.join(name)
            }
        }
        // The expressjs-framework extension packs `app/` (an npm package) as /app.
        Framework::ExpressJs => root.join("app"),
        _ => root.to_path_buf(),
    }
}

fn read_files(
    root: &Path,
    app_dir: &Path,
    framework: Framework,
    actions: &IndexMap<String, ActionDef>,
) -> ProjectFiles {
    let has = |n: &str| {
        app_dir.join(n).is_file() || (framework == Framework::ExpressJs && root.join(n).is_file())
    };
    let python_deps = ["requirements.txt", "pyproject.toml"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(root.join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let gevent = framework.is_python() && mentions_package(&python_deps, "gevent");
    let gevent_worker = gevent
        && (has_extra(&python_deps, "gunicorn", "gevent")
            || mentions_package(&python_deps, "packaging"));
    let mut action_handlers = IndexMap::new();
    for name in actions.keys() {
        for candidate in [name.clone(), format!("{name}.sh"), format!("{name}.py")] {
            if app_dir.join("actions").join(&candidate).is_file() {
                action_handlers.insert(name.clone(), candidate);
                break;
            }
        }
    }
    ProjectFiles {
        app_source_dir: app_dir.to_path_buf(),
        migrate: has("migrate"),
        migrate_sh: has("migrate.sh"),
        migrate_py: has("migrate.py"),
        manage_py: framework == Framework::Django && app_dir.join("manage.py").is_file(),
        gevent,
        gevent_worker,
        action_handlers,
    }
}

/// Whether a requirements/pyproject text requires `package[... extra ...]`.
pub fn has_extra(deps: &str, package: &str, extra: &str) -> bool {
    deps.lines().any(|line| {
        let line = line
            .split('#')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
            .replace(' ', "");
        let mut rest = line.as_str();
        while let Some(i) = rest.find(package) {
            let after = &rest[i + package.len()..];
            let starts_word = rest[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            if starts_word {
                if let Some(extras) = after.strip_prefix('[').and_then(|a| a.split(']').next()) {
                    if extras.split(',').any(|e| e.trim() == extra) {
                        return true;
                    }
                }
            }
            rest = after;
        }
        false
    })
}

/// Whether a requirements/pyproject text names `package` (also as an extra, `gunicorn[gevent]`).
pub fn mentions_package(deps: &str, package: &str) -> bool {
    deps.lines().any(|line| {
        let line = line
            .split('#')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .any(|word| word == package)
    })
}

/// The WSGI/ASGI entry point or Go binary, as the rockcraft extensions discover it.
pub(crate) fn entry_point(app_dir: &Path, framework: Framework, name: &str) -> String {
    let snake = name.replace('-', "_");
    match framework {
        Framework::Flask | Framework::FastApi => {
            let mut candidates: Vec<String> = vec!["app.py".into(), "main.py".into()];
            for dir in ["app", "src", snake.as_str()] {
                for file in ["__init__.py", "app.py", "main.py"] {
                    candidates.push(format!("{dir}/{file}"));
                }
            }
            let module_of = |c: &str| {
                c.trim_end_matches(".py")
                    .trim_end_matches("/__init__")
                    .replace('/', ".")
            };
            let globals: &[&str] = if framework == Framework::Flask {
                &["app", "application"]
            } else {
                &["app"]
            };
            for c in &candidates {
                if let Ok(src) = std::fs::read_to_string(app_dir.join(c)) {
                    for g in globals {
                        if defines_global(&src, g) {
                            return format!("{}:{g}", module_of(c));
                        }
                    }
                    if framework == Framework::Flask {
                        for factory in ["create_app", "make_app"] {
                            if src.contains(&format!("def {factory}(")) {
                                return format!("{}:{factory}()", module_of(c));
                            }
                        }
                    }
                }
            }
            "app:app".into()
        }
        Framework::Django => {
            if app_dir.join(&snake).join("wsgi.py").is_file()
                || !app_dir.join("mysite/wsgi.py").is_file()
            {
                format!("{snake}.wsgi:application")
            } else {
                "mysite.wsgi:application".into()
            }
        }
        _ => name.to_string(),
    }
}

fn defines_global(src: &str, name: &str) -> bool {
    src.lines().any(|l| {
        let rest = match l.strip_prefix(name) {
            Some(r) => r.trim_start(),
            None => return false,
        };
        (rest.starts_with('=') && !rest.starts_with("==")) || rest.starts_with(':')
    })
}

/// The extension's main service, with the project's `services:` layered over it.
fn rock_services(
    rock_path: &Path,
    rock_src: &str,
    framework: Framework,
    entry: &str,
    declared: IndexMap<Spanned<String>, Service>,
) -> Result<IndexMap<String, Service>, Diagnostic> {
    let mut main = Service {
        override_: Some(Override::Replace),
        summary: Some(format!("{} application service", framework.name())),
        command: Some(framework.default_command(entry)),
        startup: Some(Startup::Enabled),
        user: Some("_daemon_".into()),
        working_dir: Some(framework.app_dir().into()),
        ..Default::default()
    };
    match framework {
        Framework::FastApi => {
            main.environment
                .insert("UVICORN_HOST".into(), "0.0.0.0".into());
        }
        Framework::ExpressJs => {
            main.environment
                .insert("NODE_ENV".into(), "production".into());
        }
        _ => {}
    }
    let base = Layer {
        order: 0,
        label: "extension".into(),
        doc: LayerDoc {
            services: [(framework.service_name().to_string(), main)]
                .into_iter()
                .collect(),
            ..Default::default()
        },
    };
    let mut doc = LayerDoc::default();
    for (key, s) in declared {
        let loc = Loc::from_saphyr(&key.referenced);
        let name = key.value;
        if s.override_.is_none() {
            return Err(Diagnostic::error(format!("service {name:?} must define \"override\" (merge or replace)"))
                .in_file(rock_path)
                .at(loc, rock_src)
                .with_help("add `override: replace` for a new service, or `override: merge` to change the framework's"));
        }
        doc.services.insert(name, s);
    }
    let project = Layer {
        order: 1,
        label: "rockcraft".into(),
        doc,
    };
    let plan = Plan::combine([&base, &project]);
    if let Err(e) = plan.validate() {
        return Err(Diagnostic::error(format!("invalid services: {e}")).in_file(rock_path));
    }
    Ok(plan.services)
}
