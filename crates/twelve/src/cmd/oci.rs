//! `twelve pack --oci`: the app as an OCI image archive (twelve-pack's `oci` module), and
//! `--push` to a registry with skopeo.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::anyhow;
use twelve_charm::scenario::parse_scenario;
use twelve_project::{Diagnostic, Project};

use crate::output::CliResult;

/// Where base layers and pip's cache are kept across packs: `$TWELVE_CACHE`, else
/// `~/.cache/twelve`.
fn cache_dir() -> PathBuf {
    std::env::var_os("TWELVE_CACHE")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/twelve")
        })
}

pub fn pack(
    project: &Project,
    output: Option<PathBuf>,
    tag: Option<String>,
    push: Option<String>,
) -> CliResult<ExitCode> {
    let started = Instant::now();
    let tag = tag.unwrap_or_else(|| format!("{}:latest", project.name));
    if tag
        .rsplit_once(':')
        .is_none_or(|(n, t)| n.is_empty() || t.is_empty() || t.contains('/'))
    {
        return Err(
            Diagnostic::error(format!("invalid --tag {tag:?}: give NAME:TAG"))
                .with_help("e.g. --tag flask-example:1.0")
                .into(),
        );
    }
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{}.oci.tar", project.name)));
    // The files the rock's services read (gunicorn.conf.py), from the plan of a unit
    // with the project's defaults.
    let state = parse_scenario(project, std::path::Path::new("<no scenario>"), "")?;
    let plan = twelve_charm::plan_unit(project, &state);
    let name = project.name.clone();
    let opts = twelve_pack::oci::OciOptions {
        cache_dir: cache_dir(),
        output: output.clone(),
        tag: tag.clone(),
        twelve_bin: std::env::current_exe().map_err(anyhow::Error::from)?,
        files: plan.files.into_iter().collect(),
        progress: Some(Box::new(move |step: &str| {
            eprintln!("  pack --oci {name}: {step}")
        })),
    };
    let image = twelve_pack::oci::pack_oci(project, &opts)
        .map_err(|e| anyhow!("cannot pack {} as an OCI image: {e}", project.name))?;
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    println!(
        "{} image {tag} written to {} ({:.1} MB, manifest {}) in {:.1}s{}",
        project.name,
        output.display(),
        size as f64 / 1e6,
        image.manifest_digest,
        started.elapsed().as_secs_f64(),
        if image.base_cached {
            ""
        } else {
            " (base layer built)"
        }
    );
    for (d, s) in image.layers.iter().zip(&image.layer_sizes) {
        println!("  layer {d} ({:.1} MB)", *s as f64 / 1e6);
    }
    if let Some(dest) = push {
        let (_, t) = tag.rsplit_once(':').unwrap_or_default();
        let host = dest.split('/').next().unwrap_or_default();
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy").arg("--quiet");
        if host.starts_with("127.0.0.1") || host.starts_with("localhost") {
            // A registry on this machine speaks plain HTTP.
            cmd.arg("--dest-tls-verify=false");
        }
        let status = cmd
            .arg(format!("oci-archive:{}:{t}", output.display()))
            .arg(format!("docker://{dest}"))
            .status()
            .map_err(|e| {
                Diagnostic::error(format!("cannot run skopeo to push the image: {e}"))
                    .with_help("install it: apt-get install -y skopeo")
            })?;
        if !status.success() {
            return Err(Diagnostic::error(format!(
                "pushing {} to {dest} failed (skopeo {status})",
                output.display()
            ))
            .into());
        }
        println!("pushed to {dest}");
    }
    Ok(ExitCode::SUCCESS)
}
