//! Changes: every operation that takes time (start, stop, replan, exec...) runs as a
//! change with an id that clients wait on, as in Pebble.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::timefmt;

/// How many finished changes are kept.
const KEEP_READY: usize = 200;
/// How much change data (exec output) is kept, newest first; older changes lose theirs.
const KEEP_DATA_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Change {
    pub id: u64,
    pub kind: String,
    pub summary: String,
    pub ready: bool,
    pub err: Option<String>,
    pub spawn_time: SystemTime,
    pub ready_time: Option<SystemTime>,
    /// Results of the change (exec output).
    pub data: Option<Value>,
    /// The size of `data` as JSON.
    data_bytes: usize,
}

impl Change {
    pub fn status(&self) -> &'static str {
        match (self.ready, &self.err) {
            (false, _) => "Doing",
            (true, None) => "Done",
            (true, Some(_)) => "Error",
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id.to_string(),
            "kind": self.kind,
            "summary": self.summary,
            "status": self.status(),
            "tasks": [],
            "ready": self.ready,
            "spawn-time": timefmt::format_time(self.spawn_time),
        });
        if let Some(t) = self.ready_time {
            v["ready-time"] = json!(timefmt::format_time(t));
        }
        if let Some(err) = &self.err {
            v["err"] = json!(err);
        }
        if let Some(data) = &self.data {
            v["data"] = data.clone();
        }
        v
    }
}

struct Entry {
    change: Change,
    ready: watch::Sender<bool>,
}

#[derive(Default)]
pub struct Changes {
    inner: Mutex<(u64, BTreeMap<u64, Entry>)>,
}

/// What a change's work returns: its data, or an error with optional data.
pub type Outcome = Result<Option<Value>, (String, Option<Value>)>;

impl Changes {
    /// Creates a change and runs `work` for it in the background.
    pub fn spawn(
        self: &std::sync::Arc<Self>,
        kind: &str,
        summary: String,
        work: impl Future<Output = Outcome> + Send + 'static,
    ) -> u64 {
        let id = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.0 += 1;
            let id = inner.0;
            let (ready, _) = watch::channel(false);
            inner.1.insert(
                id,
                Entry {
                    change: Change {
                        id,
                        kind: kind.to_string(),
                        summary,
                        ready: false,
                        err: None,
                        spawn_time: SystemTime::now(),
                        ready_time: None,
                        data: None,
                        data_bytes: 0,
                    },
                    ready,
                },
            );
            id
        };
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = work.await;
            me.finish(id, outcome);
        });
        id
    }

    fn finish(&self, id: u64, outcome: Outcome) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = inner.1.get_mut(&id) {
            let c = &mut entry.change;
            c.ready = true;
            c.ready_time = Some(SystemTime::now());
            let data = match outcome {
                Ok(data) => data,
                Err((err, data)) => {
                    c.err = Some(err);
                    data
                }
            };
            c.data_bytes = data.as_ref().map(|d| d.to_string().len()).unwrap_or(0);
            c.data = data;
            entry.ready.send_replace(true);
        }
        let mut budget = KEEP_DATA_BYTES;
        for entry in inner.1.values_mut().rev().filter(|e| e.change.ready) {
            let c = &mut entry.change;
            if c.data_bytes > budget {
                c.data = None;
                c.data_bytes = 0;
            }
            budget -= c.data_bytes;
        }
        let ready: Vec<u64> = inner
            .1
            .iter()
            .filter(|(_, e)| e.change.ready)
            .map(|(id, _)| *id)
            .collect();
        for old in ready.iter().take(ready.len().saturating_sub(KEEP_READY)) {
            inner.1.remove(old);
        }
    }

    pub fn get(&self, id: u64) -> Option<Change> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1.get(&id).map(|e| e.change.clone())
    }

    pub fn all(&self) -> Vec<Change> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1.values().map(|e| e.change.clone()).collect()
    }

    /// Waits until the change is ready. None if there is no such change.
    pub async fn wait(&self, id: u64) -> Option<Change> {
        let mut rx = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.1.get(&id)?.ready.subscribe()
        };
        let _ = rx.wait_for(|ready| *ready).await;
        self.get(id)
    }
}

/// Pebble's error text for a change whose tasks failed.
pub fn tasks_error(failures: &[(String, String)]) -> String {
    let mut s = String::from("cannot perform the following tasks:");
    for (task, err) in failures {
        s.push_str(&format!("\n- {task} ({err})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_finish_and_old_data_is_dropped_past_the_budget() {
        let changes = std::sync::Arc::new(Changes::default());
        let big = "x".repeat(KEEP_DATA_BYTES / 3);
        let mut ids = vec![];
        for _ in 0..4 {
            let data = json!({ "stdout": big });
            ids.push(changes.spawn("exec", "big".into(), async move { Ok(Some(data)) }));
            changes.wait(*ids.last().unwrap()).await.unwrap();
        }
        let failed = changes.spawn("start", "s".into(), async { Err(("boom".into(), None)) });
        let c = changes.wait(failed).await.unwrap();
        assert_eq!((c.status(), c.err.as_deref()), ("Error", Some("boom")));
        assert!(changes.get(ids[0]).unwrap().data.is_none());
        assert!(changes.get(ids[3]).unwrap().data.is_some());
        assert_eq!(changes.get(ids[3]).unwrap().status(), "Done");
    }
}
