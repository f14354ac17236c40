//! The layer stack: files in `STATE_DIR/layers/` (and one level of `NNN-label.d/`
//! subdirectories), plus layers added over the API, which live in memory only.

use std::path::Path;

use twelve_layer::{parse_layer_file_name, Layer, LayerDoc, LayerError, Plan};

/// Reads `dir` (the `layers/` directory). A missing directory is an empty stack.
pub fn load_dir(dir: &Path) -> Result<Vec<Layer>, String> {
    let mut layers = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(layers),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut names: Vec<(String, bool)> = entries
        .flatten()
        .map(|e| {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect();
    names.sort();
    for (name, is_dir) in names {
        if is_dir {
            let Some(stem) = name.strip_suffix(".d") else {
                continue;
            };
            let (order, label) = parse_layer_file_name(&format!("{stem}.yaml"))
                .map_err(|_| LayerError::FileName(name.clone()).to_string())?
                .ok_or_else(|| LayerError::FileName(name.clone()).to_string())?;
            let sub = dir.join(&name);
            let mut inner: Vec<String> = std::fs::read_dir(&sub)
                .map_err(|e| format!("cannot read {}: {e}", sub.display()))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            inner.sort();
            for file in inner {
                let Some((sub_order, sub_label)) =
                    parse_layer_file_name(&file).map_err(|e| e.to_string())?
                else {
                    continue;
                };
                layers.push(read_layer(
                    &sub.join(&file),
                    order * 1000 + sub_order,
                    &format!("{label}/{sub_label}"),
                )?);
            }
        } else if let Some((order, label)) =
            parse_layer_file_name(&name).map_err(|e| e.to_string())?
        {
            layers.push(read_layer(&dir.join(&name), order * 1000, &label)?);
        }
    }
    check_unique(&layers)?;
    Ok(layers)
}

fn read_layer(path: &Path, order: u32, label: &str) -> Result<Layer, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read layer {}: {e}", path.display()))?;
    Layer::parse(order, label, &text).map_err(|e| e.to_string())
}

fn check_unique(layers: &[Layer]) -> Result<(), String> {
    for (i, a) in layers.iter().enumerate() {
        for b in &layers[i + 1..] {
            if a.order == b.order {
                return Err(format!(
                    "invalid layer filename: {:?} and {:?} have the same order",
                    a.label, b.label
                ));
            }
            if a.label == b.label {
                return Err(format!(
                    "invalid layer filename: duplicate label {:?}",
                    a.label
                ));
            }
        }
    }
    Ok(())
}

/// Merges `new` into `into` as Pebble's `CombineLayers` does for two layers: entries with
/// `override: replace` replace, entries with `override: merge` merge field by field.
fn combine_docs(into: &LayerDoc, new: &LayerDoc) -> LayerDoc {
    let mut p = Plan {
        summary: into.summary.clone(),
        description: into.description.clone(),
        services: into.services.clone(),
        checks: into.checks.clone(),
        log_targets: into.log_targets.clone(),
    };
    p.apply(new);
    LayerDoc {
        summary: p.summary,
        description: p.description,
        services: p.services,
        checks: p.checks,
        log_targets: p.log_targets,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("{0}")]
    Layer(#[from] LayerError),
    #[error("layer {0:?} already exists")]
    Exists(String),
    #[error("invalid layer label {0:?}")]
    BadLabel(String),
}

/// The stack with `yaml` added under `label`, and the (validated) plan it makes.
pub fn add(
    layers: &[Layer],
    label: &str,
    yaml: &str,
    combine: bool,
) -> Result<(Vec<Layer>, Plan), AddError> {
    if label.starts_with("pebble-") {
        return Err(LayerError::ReservedLabel(label.to_string()).into());
    }
    if label.is_empty() || label.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(AddError::BadLabel(label.to_string()));
    }
    let mut out = layers.to_vec();
    let parsed = Layer::parse(0, label, yaml)?;
    match out.iter_mut().find(|l| l.label == label) {
        Some(existing) if combine => existing.doc = combine_docs(&existing.doc, &parsed.doc),
        Some(_) => return Err(AddError::Exists(label.to_string())),
        None => {
            let last = out.iter().map(|l| l.order).max().unwrap_or(0);
            out.push(Layer {
                order: (last / 1000 + 1) * 1000,
                ..parsed
            });
        }
    }
    let plan = Plan::from_layers(&out)?;
    Ok((out, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_one_level_of_subdirectories_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(
            d.join("001-base.yaml"),
            "services:\n  srv: {override: replace, command: a, environment: {A: '1', B: '1'}}\n",
        )
        .unwrap();
        std::fs::create_dir(d.join("002-more.d")).unwrap();
        std::fs::write(
            d.join("002-more.d/001-env.yaml"),
            "services:\n  srv: {override: merge, environment: {B: '2'}}\n",
        )
        .unwrap();
        std::fs::write(d.join("README.txt"), "ignored").unwrap();
        let layers = load_dir(d).unwrap();
        let labels: Vec<(u32, &str)> = layers.iter().map(|l| (l.order, l.label.as_str())).collect();
        assert_eq!(labels, [(1000, "base"), (2001, "more/env")]);
        let plan = Plan::from_layers(&layers).unwrap();
        assert_eq!(plan.services["srv"].environment["A"], "1");
        assert_eq!(plan.services["srv"].environment["B"], "2");
    }

    #[test]
    fn added_layers_go_last_and_combine_merges_into_the_same_label() {
        let base = vec![Layer::parse(
            1000,
            "base",
            "services:\n  srv: {override: replace, command: a, startup: enabled}\n",
        )
        .unwrap()];
        let (layers, plan) = add(
            &base,
            "charm",
            "services:\n  srv: {override: merge, environment: {X: '1'}}\n",
            false,
        )
        .unwrap();
        assert_eq!(layers[1].order, 2000);
        assert_eq!(plan.services["srv"].environment["X"], "1");
        let err = add(&layers, "charm", "", false).unwrap_err();
        assert_eq!(err.to_string(), "layer \"charm\" already exists");
        let (layers, plan) = add(
            &layers,
            "charm",
            "services:\n  srv: {override: merge, environment: {Y: '2'}}\n",
            true,
        )
        .unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(plan.services["srv"].environment["X"], "1");
        assert_eq!(plan.services["srv"].environment["Y"], "2");
        let (_, plan) = add(
            &layers,
            "charm",
            "services:\n  srv: {override: replace, command: b}\n",
            true,
        )
        .unwrap();
        assert!(plan.services["srv"].environment.is_empty());
        assert_eq!(plan.services["srv"].command.as_deref(), Some("b"));
    }

    #[test]
    fn bad_layers_are_refused_with_pebble_messages() {
        let err = add(&[], "x-layer", "services:\n  y: {command: a}\n", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "layer \"x-layer\" must define \"override\" for service \"y\""
        );
        let err = add(&[], "x-layer", "services:\n  y: {override: merge}\n", false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plan must define \"command\" for service \"y\""
        );
        assert!(add(&[], "pebble-x", "", false).is_err());
    }
}
