//! `/`: one self-contained HTML page (no external assets), with the snapshot at load
//! time embedded so the first paint needs no round trip; `/events` keeps it current.

use crate::Snapshot;

const PAGE: &str = include_str!("dashboard.html");
const PLACEHOLDER: &str = "/*__STATE__*/";

/// The dashboard with `snapshot` embedded.
pub(crate) fn page(snapshot: &Snapshot) -> String {
    // In a <script> element only "</" can end it early: escape every '<'.
    let json = crate::state_json(snapshot).replace('<', "\\u003c");
    PAGE.replacen(PLACEHOLDER, &json, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AppView;

    #[test]
    fn embeds_state_safely() {
        let s = Snapshot {
            apps: vec![AppView {
                name: "web".into(),
                message: "</script><b>".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let p = page(&s);
        assert!(!p.contains(PLACEHOLDER));
        assert!(!p.contains("</script><b>"));
        assert!(p.contains("\\u003c/script>\\u003cb>"));
    }
}
