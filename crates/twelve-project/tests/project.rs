//! Reading projects: every `init` profile, and the errors a user gets for bad files.

use std::path::Path;

use twelve_project::{init, Framework, OptionType, PaasCharmLine, Project, ALL_FRAMEWORKS};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn project(
    rock: &str,
    charm: &str,
) -> (
    tempfile::TempDir,
    Result<Project, twelve_project::Diagnostic>,
) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rockcraft.yaml", rock);
    write(dir.path(), "charm/charmcraft.yaml", charm);
    let p = Project::load(dir.path());
    (dir, p)
}

const FLASK_ROCK: &str = "name: web\nbase: ubuntu@22.04\nversion: '0.1'\nplatforms:\n  amd64:\nextensions:\n  - flask-framework\n";

#[test]
fn every_profile_inits_and_loads_without_notes() {
    for fw in ALL_FRAMEWORKS {
        let dir = tempfile::tempdir().unwrap();
        let files = init::init(fw.extension(), "hello-world", dir.path()).unwrap();
        assert!(files.iter().any(|f| f.ends_with("rockcraft.yaml")));
        assert!(files.iter().any(|f| f.ends_with("charm/charmcraft.yaml")));
        let p = Project::load(dir.path()).unwrap_or_else(|e| panic!("{fw}: {e}"));
        assert_eq!(p.framework, fw);
        assert_eq!(p.name, "hello-world");
        assert!(p.notes.is_empty(), "{fw}: {:?}", p.notes);
        assert!(p.services.contains_key(fw.service_name()), "{fw}");
    }
}

#[test]
fn init_refuses_to_overwrite_and_names_the_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rockcraft.yaml", "# mine\n");
    let err = init::init("flask-framework", "web", dir.path()).unwrap_err();
    assert!(err.message.contains("rockcraft.yaml"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rockcraft.yaml")).unwrap(),
        "# mine\n"
    );
    assert!(
        !dir.path().join("charm").exists() && !dir.path().join("app.py").exists(),
        "nothing is written when refusing"
    );
}

/// `init` in a directory that already holds the app writes only the project files
/// (rockcraft.yaml and charm/), leaves the app alone and says which entry point it found,
/// as `rockcraft init` writes only rockcraft.yaml.
#[test]
fn init_beside_an_existing_app_writes_only_the_project_files() {
    type Case<'a> = (Framework, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            Framework::FastApi,
            vec![
                ("main.py", "from fastapi import FastAPI\napp = FastAPI()\n"),
                ("requirements.txt", "fastapi\n"),
            ],
            "main.py",
            "main:app",
        ),
        (
            Framework::Flask,
            vec![(
                "src/app.py",
                "from flask import Flask\napplication = Flask(__name__)\n",
            )],
            "src/app.py",
            "src.app:application",
        ),
        (
            Framework::Django,
            vec![
                ("seed_app/manage.py", "# mine\n"),
                ("seed_app/seed_app/wsgi.py", "application = None\n"),
            ],
            "seed_app/manage.py",
            "seed_app.wsgi:application",
        ),
        (
            Framework::Go,
            vec![("go.mod", "module seed\n"), ("cmd.go", "package main\n")],
            "go.mod",
            "go.mod",
        ),
        (
            Framework::ExpressJs,
            vec![("app/package.json", "{}\n")],
            "app/package.json",
            "app/package.json",
        ),
        (
            Framework::SpringBoot,
            vec![("pom.xml", "<project/>\n")],
            "pom.xml",
            "pom.xml",
        ),
    ];
    for (fw, app_files, found_want, entry_want) in cases {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in &app_files {
            write(dir.path(), rel, text);
        }
        let before: Vec<_> = walk(dir.path());
        let report = init::init_report(fw.extension(), "seed-app", dir.path()).unwrap();
        assert_eq!(
            report.scope,
            init::InitScope::ProjectFiles {
                found: found_want.into(),
                entry: entry_want.into()
            },
            "{fw}"
        );
        for f in &report.written {
            let rel = f.strip_prefix(dir.path()).unwrap();
            assert!(
                rel == Path::new("rockcraft.yaml") || rel.starts_with("charm"),
                "{fw}: wrote {}",
                rel.display()
            );
        }
        for (rel, text) in &app_files {
            assert_eq!(
                &std::fs::read_to_string(dir.path().join(rel)).unwrap(),
                text,
                "{fw}"
            );
        }
        let after = walk(dir.path());
        let new: Vec<_> = after.iter().filter(|p| !before.contains(p)).collect();
        assert!(
            new.iter().all(|p| p.ends_with("rockcraft.yaml")
                || p.components().any(|c| c.as_os_str() == "charm")),
            "{fw}: {new:?}"
        );
        let p = Project::load(dir.path()).unwrap_or_else(|e| panic!("{fw}: {e}"));
        if matches!(
            fw,
            Framework::FastApi | Framework::Flask | Framework::Django
        ) {
            let command = p.services[fw.service_name()].command.clone().unwrap();
            assert!(command.contains(entry_want), "{fw}: {command}");
        }
    }
}

/// `init` in a project's `charm/` (where `charmcraft init` runs) writes the charm side only;
/// `init` at the root afterwards keeps it and writes the rest.
#[test]
fn init_in_charm_writes_the_charm_side_only() {
    let dir = tempfile::tempdir().unwrap();
    let charm = dir.path().join("charm");
    std::fs::create_dir(&charm).unwrap();
    let report = init::init_report("flask-framework", "web", &charm).unwrap();
    assert_eq!(report.scope, init::InitScope::CharmOnly);
    let mut names: Vec<String> = report
        .written
        .iter()
        .map(|p| p.strip_prefix(&charm).unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["charmcraft.yaml", "requirements.txt", "src/charm.py"]
    );
    assert!(!dir.path().join("rockcraft.yaml").exists() && !dir.path().join("app.py").exists());
    std::fs::write(
        charm.join("charmcraft.yaml"),
        std::fs::read_to_string(charm.join("charmcraft.yaml")).unwrap() + "# edited\n",
    )
    .unwrap();

    let report = init::init_report("flask-framework", "web", dir.path()).unwrap();
    assert_eq!(report.scope, init::InitScope::Full);
    assert!(
        report.written.iter().all(|p| !p.starts_with(&charm)),
        "{:?}",
        report.written
    );
    assert!(std::fs::read_to_string(charm.join("charmcraft.yaml"))
        .unwrap()
        .ends_with("# edited\n"));
    let p = Project::load(dir.path()).unwrap();
    assert_eq!(p.charm_dir.as_deref(), Some(charm.as_path()));
}

#[test]
fn init_refuses_unknown_profiles_and_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let err = init::init("rails-framework", "web", dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("flask-framework, django-framework"),
        "{err}"
    );
}

#[test]
fn init_makes_migrate_scripts_executable_and_substitutes_the_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    init::init("django-framework", "my-site", dir.path()).unwrap();
    assert!(dir.path().join("my_site/my_site/settings.py").is_file());
    let rock = std::fs::read_to_string(dir.path().join("rockcraft.yaml")).unwrap();
    assert!(rock.contains("name: my-site"));
    for entry in walk(dir.path()) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(
            !text.contains("{{name"),
            "{} keeps a placeholder",
            entry.display()
        );
        if entry.extension().is_some_and(|e| e == "sh") {
            assert!(std::fs::metadata(&entry).unwrap().permissions().mode() & 0o111 != 0);
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn extension_options_and_user_options_are_combined() {
    let (_d, p) = project(FLASK_ROCK, "name: web\ntype: charm\nextensions: [flask-framework]\nconfig:\n  options:\n    token:\n      type: string\n      optional: false\n    api-token:\n      type: secret\n");
    let p = p.unwrap();
    assert_eq!(p.options["flask-debug"].type_, OptionType::Boolean);
    assert_eq!(
        p.options["flask-preferred-url-scheme"].default,
        Some("HTTPS".into())
    );
    assert!(p.options["token"].required());
    assert_eq!(p.user_option_names, ["token", "api-token"]);
    assert!(p.actions.contains_key("rotate-secret-key"));
    assert!(p.requires.contains_key("ingress"));
}

#[test]
fn a_charmcraft_yaml_written_in_full_takes_the_framework_from_rockcraft() {
    let (_d, p) = project(FLASK_ROCK, "name: web\ntype: charm\nconfig:\n  options:\n    webserver-workers:\n      type: int\n      default: 2\nrequires:\n  postgresql:\n    interface: postgresql_client\n    optional: false\n    limit: 1\n");
    let p = p.unwrap();
    assert_eq!(p.framework, Framework::Flask);
    assert!(
        !p.options.contains_key("flask-debug"),
        "no extension, so only the options written out"
    );
    assert_eq!(p.options["webserver-workers"].default, Some(2.into()));
    assert!(p.requires["postgresql"].required());
}

#[test]
fn non_optional_option_with_a_default_is_refused_at_its_line() {
    let (_d, p) = project(FLASK_ROCK, "name: web\nextensions: [flask-framework]\nconfig:\n  options:\n    token:\n      type: string\n      default: x\n      optional: false\n");
    let err = p.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("charmcraft.yaml:5:5"), "{text}");
    assert!(
        text.contains("Non-optional configuration options can not have default values"),
        "{text}"
    );
}

#[test]
fn unknown_extension_is_refused_with_the_known_ones() {
    let (_d, p) = project(
        "name: web\nextensions:\n  - rails-framework\n",
        "name: web\n",
    );
    let err = p.unwrap_err().to_string();
    assert!(
        err.contains("unknown extension \"rails-framework\""),
        "{err}"
    );
    assert!(err.contains("rockcraft.yaml:3:5"), "{err}");
    assert!(
        err.contains("help: twelve knows the extensions flask-framework"),
        "{err}"
    );
}

#[test]
fn options_with_the_framework_prefix_are_refused() {
    for name in ["flask-foo", "webserver-foo"] {
        let (_d, p) = project(FLASK_ROCK, &format!("name: web\nextensions: [flask-framework]\nconfig:\n  options:\n    {name}:\n      type: string\n"));
        let err = p.unwrap_err().to_string();
        assert!(err.contains("prefix reserved"), "{err}");
        assert!(err.contains("charmcraft.yaml:5:"), "{err}");
    }
}

#[test]
fn wrong_option_type_and_malformed_yaml_point_at_the_line() {
    let (_d, p) = project(
        FLASK_ROCK,
        "name: web\nconfig:\n  options:\n    n:\n      type: integer\n",
    );
    let err = p.unwrap_err().to_string();
    assert!(err.contains("charmcraft.yaml:5:"), "{err}");
    let (_d, p) = project(FLASK_ROCK, "name: web\nconfig: [\n");
    let err = p.unwrap_err().to_string();
    assert!(err.contains("error: invalid charmcraft.yaml"), "{err}");
    assert!(err.contains("charmcraft.yaml:"), "{err}");
}

#[test]
fn unknown_top_level_keys_are_notes_not_errors() {
    let (_d, p) = project(&format!("{FLASK_ROCK}sevices: {{}}\n"), "name: web\n");
    let p = p.unwrap();
    assert_eq!(p.notes.len(), 1);
    let note = p.notes[0].to_string();
    assert!(
        note.contains("unknown key `sevices`") && note.contains("rockcraft.yaml:8:1"),
        "{note}"
    );
}

#[test]
fn extra_services_merge_over_the_framework_service() {
    let rock = format!("{FLASK_ROCK}services:\n  flask:\n    override: merge\n    environment: {{EXTRA: '1'}}\n  celery-worker:\n    override: replace\n    command: celery -A app worker\n    startup: enabled\n");
    let (_d, p) = project(&rock, "name: web\n");
    let p = p.unwrap();
    let flask = &p.services["flask"];
    assert!(flask
        .command
        .as_deref()
        .unwrap()
        .starts_with("/bin/python3 -m gunicorn -c /flask/gunicorn.conf.py"));
    assert_eq!(flask.environment["EXTRA"], "1");
    assert_eq!(
        p.services["celery-worker"].command.as_deref(),
        Some("celery -A app worker")
    );
}

#[test]
fn a_service_without_override_is_refused() {
    let rock = format!("{FLASK_ROCK}services:\n  my-worker:\n    command: x\n");
    let (_d, p) = project(&rock, "name: web\n");
    let err = p.unwrap_err().to_string();
    assert!(err.contains("must define \"override\""), "{err}");
    assert!(err.contains("rockcraft.yaml:9:"), "{err}");
}

#[test]
fn migration_files_gevent_and_entry_point_are_found() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rockcraft.yaml", FLASK_ROCK);
    write(dir.path(), "requirements.txt", "flask\ngunicorn[gevent]\n");
    write(dir.path(), "migrate.sh", "true\n");
    write(
        dir.path(),
        "src/__init__.py",
        "from flask import Flask\n\ndef create_app():\n    return Flask(__name__)\n",
    );
    let p = Project::load(dir.path()).unwrap();
    assert!(p.files.migrate_sh && !p.files.migrate_py && !p.files.manage_py);
    assert!(p.files.gevent);
    assert!(p.services["flask"]
        .command
        .as_deref()
        .unwrap()
        .contains("'src:create_app()'"));
}

#[test]
fn a_directory_without_rockcraft_yaml_is_not_a_project() {
    let dir = tempfile::tempdir().unwrap();
    let err = Project::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is not a twelve project"), "{err}");
    assert!(err.contains("twelve init --profile"), "{err}");
}

#[test]
fn paas_config_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rockcraft.yaml", FLASK_ROCK);
    write(dir.path(), "charm/charmcraft.yaml", "name: web\n");
    write(dir.path(), "charm/paas-config.yaml", "port: 8001\nprometheus:\n  scrape_configs:\n    - job_name: a\n      static_configs:\n        - targets: ['*:9090', '@scheduler:8082']\n");
    let p = Project::load(dir.path()).unwrap();
    assert_eq!(p.paas_config.port, Some(8001));
    assert_eq!(
        p.paas_config.prometheus.unwrap().scrape_configs[0].metrics_path,
        "/metrics"
    );
    write(
        dir.path(),
        "charm/paas-config.yaml",
        "prometheus:\n  scrape_configs:\n    - job_name: a\n    - job_name: a\n",
    );
    let err = Project::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("Invalid paas-config.yaml: duplicate job_name"),
        "{err}"
    );
}

/// paas-charm 1.12 refuses top-level `port`, `metrics-port` and `metrics-path` in
/// paas-config.yaml; a project that sets one is written for paas-charm main.
#[test]
fn paas_config_ports_select_paas_charm_main_and_are_checked() {
    let cases: Vec<(Option<&str>, Result<PaasCharmLine, &str>)> = vec![
        (None, Ok(PaasCharmLine::V1_12)),
        (
            Some("framework_logging_format: json\n"),
            Ok(PaasCharmLine::V1_12),
        ),
        (Some("port: 9000\n"), Ok(PaasCharmLine::Main)),
        (Some("metrics-port: 9102\n"), Ok(PaasCharmLine::Main)),
        (Some("metrics-path: /stats\n"), Ok(PaasCharmLine::Main)),
        (
            Some("port: 0\n"),
            Err("Invalid paas-config.yaml: port must be a port from 1 to 65535"),
        ),
        (Some("metrics-port: 70000\n"), Err("paas-config.yaml")),
        (
            Some("metrics-path: stats\n"),
            Err("metrics-path \"stats\" must start with /"),
        ),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "rockcraft.yaml", FLASK_ROCK);
        write(dir.path(), "charm/charmcraft.yaml", "name: web\n");
        if let Some(t) = text {
            write(dir.path(), "charm/paas-config.yaml", t);
        }
        match (Project::load(dir.path()), want) {
            (Ok(p), Ok(line)) => assert_eq!(p.paas_charm, line, "{text:?}"),
            (Err(e), Err(m)) => assert!(e.to_string().contains(m), "{text:?}: {e}"),
            (got, want) => panic!(
                "{text:?}: got {:?}, want {want:?}",
                got.map(|p| p.paas_charm)
            ),
        }
    }
}

/// The charm's `cos_custom/` (paas-charm 1.11+): rule files in either format and dashboards
/// are read; `.gitkeep` and other suffixes are skipped.
#[test]
fn cos_custom_directories_are_read() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rockcraft.yaml", FLASK_ROCK);
    write(dir.path(), "charm/charmcraft.yaml", "name: web\n");
    let cos = "charm/cos_custom/";
    write(
        dir.path(),
        &format!("{cos}prometheus_alert_rules/.gitkeep"),
        "",
    );
    write(
        dir.path(),
        &format!("{cos}prometheus_alert_rules/high.rule"),
        "alert: High\nexpr: x > 1\nfor: 1m\nlabels:\n  severity: warning\n",
    );
    write(
        dir.path(),
        &format!("{cos}prometheus_alert_rules/rec.yaml"),
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: sum(x)\n",
    );
    write(
        dir.path(),
        &format!("{cos}prometheus_alert_rules/notes.txt"),
        "x",
    );
    write(
        dir.path(),
        &format!("{cos}loki_alert_rules/errors.rules"),
        "alert: E\nexpr: count_over_time({%%juju_topology%%}[5m]) > 1\n",
    );
    write(
        dir.path(),
        &format!("{cos}grafana_dashboards/d.json"),
        "{\"title\": \"d\", \"panels\": []}",
    );
    let p = Project::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let c = &p.cos;
    let stems: Vec<&str> = c.prometheus_rules.iter().map(|f| f.stem.as_str()).collect();
    assert_eq!(stems, ["high", "rec"]);
    assert!(!c.prometheus_rules[0].grouped && c.prometheus_rules[1].grouped);
    assert_eq!(
        c.prometheus_rules[0].groups[0].rules[0].alert.as_deref(),
        Some("High")
    );
    assert_eq!(
        c.prometheus_rules[1].groups[0].rules[0].record.as_deref(),
        Some("a:b")
    );
    assert_eq!(c.loki_rules.len(), 1);
    assert_eq!(c.dashboards.len(), 1);
    assert_eq!(c.dashboards[0].json["title"], "d");
}

/// A broken rule file or dashboard, or a stray entry in cos_custom/, stops the load with
/// one error naming the file (and the line where the parser knows it).
#[test]
fn malformed_cos_custom_files_are_located_errors() {
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "prometheus_alert_rules/bad.rule",
            "alert: A\nexpr: [unclosed\n",
            vec!["bad.rule:", "invalid bad.rule"],
        ),
        (
            "prometheus_alert_rules/noexpr.rule",
            "alert: A\nfor: 1m\n",
            vec!["noexpr.rule", "expr"],
        ),
        (
            "prometheus_alert_rules/g.yml",
            "groups:\n  - name: g\n    rules:\n      - expr: up == 0\n        for: 1m\n",
            vec!["g.yml:4:", "needs `alert:`"],
        ),
        (
            "prometheus_alert_rules/typo.rules",
            "alert: A\nexpr: up == 0\nannotation:\n  summary: x\n",
            vec!["typo.rules", "annotation"],
        ),
        (
            "loki_alert_rules/e.rule",
            "alert: A\n  expr: x\n bad",
            vec!["e.rule", "Loki"],
        ),
        (
            "grafana_dashboards/d.json",
            "{\n  \"title\": \"d\",\n  \"panels\": [\n}\n",
            vec!["d.json:4:", "invalid dashboard d.json"],
        ),
        (
            "extra/x.rule",
            "alert: A\nexpr: up\n",
            vec!["directory named extra"],
        ),
        ("README.md", "hi", vec!["cannot contain a file (README.md)"]),
    ];
    for (rel, text, wants) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "rockcraft.yaml", FLASK_ROCK);
        write(dir.path(), "charm/charmcraft.yaml", "name: web\n");
        write(dir.path(), &format!("charm/cos_custom/{rel}"), text);
        let err = Project::load(dir.path()).unwrap_err().to_string();
        for want in wants {
            assert!(err.contains(want), "{rel}: {want:?} not in:\n{err}");
        }
    }
}
