//! Releases as the substrate sees them: where a release's rock paths live on this machine.

use std::path::PathBuf;

use twelve_pack::Release;

use crate::home::Home;
use crate::model::AppRecord;
use crate::substrate::PathMap;

/// The path map of a release: its rock paths, and its binaries first on PATH.
pub fn release_map(home: &Home, release_id: &str) -> Result<PathMap, String> {
    let release = Release::load(&home.releases(), release_id).map_err(|e| e.to_string())?;
    let bin_dirs: Vec<PathBuf> = release
        .path_env()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    Ok(PathMap::new(release.rock_paths(), bin_dirs))
}

/// Maps a command typed by the user (`twelve exec`) onto the app's current release.
pub fn map_argv(home: &Home, app: &AppRecord, argv: &[String]) -> Vec<String> {
    app.release_id(app.current_release)
        .and_then(|id| release_map(home, id).ok())
        .map(|map| map.argv(argv))
        .unwrap_or_else(|| argv.to_vec())
}
