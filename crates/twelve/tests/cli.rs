//! The CLI as a user runs it: `init` and `render`, their output contract and their errors.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const PROFILES: [&str; 6] = [
    "flask-framework",
    "django-framework",
    "fastapi-framework",
    "go-framework",
    "expressjs-framework",
    "spring-boot-framework",
];

fn twelve(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_twelve"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn init_then_render_gives_an_active_plan_for_every_profile() {
    for profile in PROFILES {
        let dir = tempfile::tempdir().unwrap();
        let (code, out, err) = twelve(
            &["init", "--profile", profile, "--name", "hello", "proj"],
            dir.path(),
        );
        assert_eq!(code, 0, "{profile}: {err}");
        assert!(out.contains("Created"), "{out}");
        let (code, out, err) = twelve(&["render", "proj", "--format", "json"], dir.path());
        assert_eq!(code, 0, "{profile}: {err}");
        assert!(
            err.is_empty(),
            "{profile}: no notes or warnings expected, got {err}"
        );
        let doc: Value = serde_json::from_str(&out).unwrap();
        let want = if profile == "django-framework" {
            "blocked"
        } else {
            "active"
        };
        assert_eq!(doc["status"]["state"], want, "{profile}: {}", doc["status"]);
        assert!(!doc["services"].as_object().unwrap().is_empty());
    }
}

#[test]
fn init_takes_the_name_from_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("my-app")).unwrap();
    let (code, _, err) = twelve(
        &["init", "--profile", "go-framework"],
        &dir.path().join("my-app"),
    );
    assert_eq!(code, 0, "{err}");
    let rock = std::fs::read_to_string(dir.path().join("my-app/rockcraft.yaml")).unwrap();
    assert!(rock.contains("name: my-app"), "{rock}");
}

#[test]
fn init_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rockcraft.yaml"), "mine").unwrap();
    let (code, _, err) = twelve(
        &["init", "--profile", "flask-framework", "--name", "web"],
        dir.path(),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("refusing to overwrite") && err.contains("rockcraft.yaml"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rockcraft.yaml")).unwrap(),
        "mine"
    );
}

#[test]
fn pebble_commands_parse_as_subcommands_of_twelve() {
    // `twelve pebble ...` takes a parser of its own (a supervisor builds no other command);
    // what a user sees is the same as for any other subcommand.
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = twelve(&["pebble", "--help"], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("pebble <COMMAND>"), "{out}");
    for command in ["run", "plan", "services", "replan", "logs"] {
        assert!(
            out.contains(&format!("\n  {command} ")),
            "{command} missing:\n{out}"
        );
    }
    let (code, out, _) = twelve(&["pebble", "--version"], dir.path());
    assert_eq!(code, 0);
    assert!(out.starts_with("twelve-pebble "), "{out}");
    let (code, _, err) = twelve(&["pebble", "bogus"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand 'bogus'"), "{err}");
    let (code, _, err) = twelve(&["pebble", "services", "--dir"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--dir"), "{err}");
}

#[test]
fn init_help_lists_the_profiles_and_unknown_profiles_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out, _) = twelve(&["init", "--help"], dir.path());
    for p in PROFILES {
        assert!(out.contains(p), "{p} missing from help:\n{out}");
    }
    let (code, _, err) = twelve(&["init", "--profile", "rails-framework"], dir.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("rails-framework") && err.contains("possible values"),
        "{err}"
    );
}

#[test]
fn render_follows_the_json_contract_and_hides_secrets() {
    let ex = examples();
    let scenario = ex.join("flask/scenario.yaml");
    let sc = scenario.to_str().unwrap();
    let (code, out, err) = twelve(
        &["render", "flask", "--scenario", sc, "--format", "json"],
        &ex,
    );
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["status"]["state"], "active");
    assert_eq!(doc["status"]["message"], "");
    let flask = &doc["services"]["flask"];
    for key in ["command", "startup", "environment", "user", "working-dir"] {
        assert!(!flask[key].is_null(), "services.flask.{key} missing");
    }
    assert_eq!(flask["environment"]["FLASK_GREETING"], "bonjour");
    assert_eq!(flask["environment"]["FLASK_SECRET_KEY"], "<redacted>");
    assert_eq!(
        doc["services"]["heartbeat-scheduler"]["startup"], "disabled",
        "unit 1 is not the scheduler unit"
    );
    assert_eq!(
        doc["migration"]["command"],
        serde_json::json!(["bash", "-eo", "pipefail", "migrate.sh"])
    );
    assert!(doc["actions"]["rotate-secret-key"].is_object());
    assert!(
        !out.contains("s3cr3t-pass"),
        "the password must not be printed without --reveal"
    );

    let (_, out, _) = twelve(
        &[
            "render",
            "flask",
            "--scenario",
            sc,
            "--format",
            "json",
            "--reveal",
            "--unit",
            "0",
        ],
        &ex,
    );
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["services"]["flask"]["environment"]["FLASK_SECRET_KEY"],
        "generated-at-deploy-time"
    );
    assert_eq!(doc["services"]["heartbeat-scheduler"]["startup"], "enabled");
}

fn render_with(scenario: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sc.yaml"), scenario).unwrap();
    let ex = examples().join("flask");
    let (code, _, err) = twelve(
        &["render", ex.to_str().unwrap(), "--scenario", "sc.yaml"],
        dir.path(),
    );
    (code, err)
}

#[test]
fn scenario_errors_name_the_line() {
    let (code, err) = render_with("config:\n  greeting: [\n");
    assert_ne!(code, 0);
    assert!(
        err.contains("error: invalid sc.yaml") && err.contains("sc.yaml:"),
        "{err}"
    );

    let (code, err) = render_with("unit: 0\nconfig:\n  webserver-workers: many\n");
    assert_ne!(code, 0);
    assert!(
        err.contains("option \"webserver-workers\": expected an integer, got string \"many\""),
        "{err}"
    );
    assert!(err.contains("sc.yaml:3:22"), "{err}");

    let (code, err) = render_with("config:\n  tokne: x\n");
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown option \"tokne\"")
            && err.contains("sc.yaml:2:3")
            && err.contains("token"),
        "{err}"
    );

    let (code, err) = render_with("integrations:\n  postgres:\n    uri: x\n");
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown integration endpoint \"postgres\"") && err.contains("postgresql"),
        "{err}"
    );

    let (code, err) = render_with("colour: blue\n");
    assert_ne!(code, 0);
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn render_of_a_directory_that_is_not_a_project_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = twelve(&["render", "."], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("is not a twelve project") && err.contains("twelve init"),
        "{err}"
    );
}

#[test]
fn every_example_renders_with_its_worker_and_scheduler() {
    for ex in [
        "flask",
        "django",
        "fastapi",
        "expressjs",
        "go",
        "spring-boot",
    ] {
        let (code, out, err) = twelve(&["render", ex, "--format", "json"], &examples());
        assert_eq!(code, 0, "{ex}: {err}");
        let doc: Value = serde_json::from_str(&out).unwrap();
        let services = doc["services"].as_object().unwrap();
        assert!(services.keys().any(|k| k.ends_with("-worker")), "{ex}");
        assert!(services.keys().any(|k| k.ends_with("-scheduler")), "{ex}");
    }
}

/// `--paas-charm` picks the port rules where paas-charm 1.12 and main differ; without it a
/// project is 1.12 unless its paas-config.yaml sets a port key (main only).
#[test]
fn render_follows_the_paas_charm_line_of_the_project_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = twelve(
        &[
            "init",
            "--profile",
            "go-framework",
            "--name",
            "hello",
            "proj",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let env_of = |extra: &[&str]| {
        let mut args = vec!["render", "proj", "--format", "json"];
        args.extend_from_slice(extra);
        let (code, out, err) = twelve(&args, dir.path());
        assert_eq!(code, 0, "{extra:?}: {err}");
        let doc: Value = serde_json::from_str(&out).unwrap();
        doc["services"]["go"]["environment"].clone()
    };
    let v1 = env_of(&[]);
    assert_eq!(v1["APP_PORT"], "8080");
    assert!(v1["PORT"].is_null(), "{v1}");
    let main = env_of(&["--paas-charm", "main"]);
    assert_eq!(main["PORT"], "8080");
    assert_eq!(main["METRICS_PORT"], "8080");
    assert!(main["APP_PORT"].is_null(), "{main}");

    std::fs::write(
        dir.path().join("proj/charm/paas-config.yaml"),
        "port: 9000\n",
    )
    .unwrap();
    let by_file = env_of(&[]);
    assert_eq!(by_file["PORT"], "9000");
    assert_eq!(env_of(&["--paas-charm", "1.12"])["APP_PORT"], "9000");

    let (code, _, err) = twelve(&["render", "proj", "--paas-charm", "3"], dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("use 1.12 or main"), "{err}");
}

/// The seed's workflow: `init` where the app already is (a FastAPI `main.py`) writes only
/// the project files, says which entry point it found, and the plan runs the user's app.
#[test]
fn init_beside_an_existing_app_keeps_it_and_names_its_entry_point() {
    let dir = tempfile::tempdir().unwrap();
    let proj = dir.path().join("seed-demo");
    std::fs::create_dir(&proj).unwrap();
    let main_py = "from fastapi import FastAPI\napp = FastAPI()\n";
    std::fs::write(proj.join("main.py"), main_py).unwrap();
    std::fs::write(proj.join("requirements.txt"), "fastapi\n").unwrap();
    let (code, out, err) = twelve(&["init", "--profile", "fastapi-framework"], &proj);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("main.py") && out.contains("main:app") && out.contains("left it alone"),
        "{out}"
    );
    assert!(
        !proj.join("app.py").exists(),
        "no hello-world app.py beside main.py"
    );
    assert_eq!(
        std::fs::read_to_string(proj.join("main.py")).unwrap(),
        main_py
    );
    assert_eq!(
        std::fs::read_to_string(proj.join("requirements.txt")).unwrap(),
        "fastapi\n"
    );
    let (code, out, err) = twelve(&["render", "--format", "json"], &proj);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let command = doc["services"]["fastapi"]["command"].as_str().unwrap();
    assert!(command.contains("uvicorn main:app"), "{command}");
}

/// `twelve init` in a project's `charm/` (where the seed runs `charmcraft init`) writes the
/// charm side only, named after the project.
#[test]
fn init_in_charm_writes_the_charm_side_named_after_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let proj = dir.path().join("proj");
    std::fs::create_dir_all(proj.join("charm")).unwrap();
    std::fs::write(
        proj.join("rockcraft.yaml"),
        "name: seed-demo\nbase: ubuntu@24.04\nversion: '0.1'\nextensions: [fastapi-framework]\n",
    )
    .unwrap();
    std::fs::write(
        proj.join("main.py"),
        "from fastapi import FastAPI\napp = FastAPI()\n",
    )
    .unwrap();
    let (code, out, err) = twelve(
        &["init", "--profile", "fastapi-framework"],
        &proj.join("charm"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("charm side") && out.contains("\"seed-demo\""),
        "{out}"
    );
    let charm = std::fs::read_to_string(proj.join("charm/charmcraft.yaml")).unwrap();
    assert!(charm.contains("name: seed-demo"), "{charm}");
    assert!(!proj.join("charm/rockcraft.yaml").exists());
    assert!(!proj.join("charm/app.py").exists() && !proj.join("app.py").exists());
    let (code, _, err) = twelve(&["render"], &proj);
    assert_eq!(code, 0, "{err}");
}
