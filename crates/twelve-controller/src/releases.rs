//! Releases as the substrate sees them: where a release's rock paths live on this machine.

use std::path::PathBuf;

use twelve_pack::Release;
use twelve_project::Project;

use crate::home::Home;
use crate::model::AppRecord;
use crate::substrate::PathMap;

/// The path map of a release: its rock paths, and its binaries first on PATH.
pub fn release_map(home: &Home, release_id: &str, _project: &Project) -> Result<PathMap, String> {
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
    let Some(id) = app.release_id(app.current_release) else {
        return argv.to_vec();
    };
    match Release::load(&home.releases(), id) {
        Ok(release) => {
            let bin_dirs: Vec<PathBuf> = release
                .path_env()
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect();
            PathMap::new(release.rock_paths(), bin_dirs).argv(argv)
        }
        Err(_) => argv.to_vec(),
    }
}
