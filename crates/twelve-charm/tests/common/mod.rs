//! Fixtures: a project written to a temporary directory and loaded as twelve does.
#![allow(dead_code)]

use std::path::Path;

use twelve_charm::{plan_unit, AppState, UnitPlan};
use twelve_project::{Framework, Project};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub project: Project,
}

pub fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A project of `fw` named `web`, with extra charmcraft.yaml text (options, requires...),
/// extra rockcraft.yaml text (services...) and extra files.
pub fn project(
    fw: Framework,
    charm_extra: &str,
    rock_extra: &str,
    files: &[(&str, &str)],
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ext = fw.extension();
    write(
        dir.path(),
        "rockcraft.yaml",
        &format!("name: web\nbase: ubuntu@24.04\nextensions: [{ext}]\n{rock_extra}"),
    );
    write(
        dir.path(),
        "charm/charmcraft.yaml",
        &format!("name: web\ntype: charm\nextensions: [{ext}]\n{charm_extra}"),
    );
    for (rel, text) in files {
        write(dir.path(), rel, text);
    }
    let project = Project::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    Fixture { dir, project }
}

pub fn flask(charm_extra: &str) -> Fixture {
    project(Framework::Flask, charm_extra, "", &[])
}

/// A state for app `web`, unit 0 of [0], with a generated secret key.
pub fn state() -> AppState {
    let mut s = AppState::new("web");
    s.secret_key = Some("generated-key".into());
    s
}

pub fn plan(f: &Fixture, s: &AppState) -> UnitPlan {
    plan_unit(&f.project, s)
}

pub fn env<'a>(p: &'a UnitPlan, service: &str) -> &'a indexmap::IndexMap<String, String> {
    &p.services
        .get(service)
        .unwrap_or_else(|| panic!("no service {service}"))
        .environment
}

pub fn set(s: &mut AppState, option: &str, value: serde_json::Value) {
    s.config.insert(option.to_string(), value);
}
