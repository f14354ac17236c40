//! Service output: one bounded in-memory ring buffer per service (stdout and stderr
//! merged), kept across restarts of that service, plus a broadcast for `logs -f`, and
//! the log targets each line is offered to (`forward`). Nothing here ever touches the
//! disk.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;

use crate::timefmt;

/// Pebble's `maxLogBytes`.
pub const MAX_LOG_BYTES: usize = 100 * 1024;
/// Longer lines are cut into pieces of this size.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Bytes counted for each entry on top of its message (timestamp, service, bookkeeping).
const ENTRY_OVERHEAD: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Global sequence number: orders entries written in the same millisecond.
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub time: i64,
    /// Nanoseconds since the epoch (for log forwarding).
    pub nanos: i64,
    pub service: Arc<str>,
    pub message: String,
}

impl Entry {
    /// `2021-05-13T03:16:51.001Z [svc] message`
    pub fn to_text(&self) -> String {
        format!(
            "{} [{}] {}",
            timefmt::format_millis(self.time),
            self.service,
            self.message
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "time": timefmt::format_millis(self.time),
            "service": &*self.service,
            "message": self.message,
        })
    }
}

/// One service's ring buffer.
#[derive(Debug, Default)]
pub struct Ring {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
}

impl Ring {
    pub fn push(&mut self, entry: Arc<Entry>) {
        self.bytes += entry.message.len() + ENTRY_OVERHEAD;
        self.entries.push_back(entry);
        while self.bytes > MAX_LOG_BYTES {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.message.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// All services' buffers.
pub struct LogStore {
    rings: Mutex<BTreeMap<String, Ring>>,
    names: Mutex<BTreeMap<String, Arc<str>>>,
    seq: AtomicU64,
    tx: broadcast::Sender<Arc<Entry>>,
    /// Log targets: every line is offered to them.
    pub forwarder: crate::forward::Forwarder,
    /// Also copy every line to the daemon's stdout (`run --verbose`).
    verbose: bool,
}

impl LogStore {
    pub fn new(verbose: bool) -> LogStore {
        let (tx, _) = broadcast::channel(1024);
        LogStore {
            rings: Mutex::new(BTreeMap::new()),
            names: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            tx,
            forwarder: crate::forward::Forwarder::default(),
            verbose,
        }
    }

    fn service_name(&self, service: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names
            .entry(service.to_string())
            .or_insert_with(|| Arc::from(service))
            .clone()
    }

    pub fn write(&self, service: &str, message: String) {
        let nanos = timefmt::now_nanos();
        let entry = Arc::new(Entry {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            time: nanos.div_euclid(1_000_000),
            nanos,
            service: self.service_name(service),
            message,
        });
        if self.verbose {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", entry.to_text());
        }
        {
            let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
            rings
                .entry(service.to_string())
                .or_default()
                .push(entry.clone());
        }
        self.forwarder.offer(&entry);
        let _ = self.tx.send(entry);
    }

    /// The last `n` entries (all if None) of the given services (all if empty), merged
    /// in time order.
    pub fn last(&self, services: &[String], n: Option<usize>) -> Vec<Arc<Entry>> {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Arc<Entry>> = rings
            .iter()
            .filter(|(name, _)| services.is_empty() || services.contains(name))
            .flat_map(|(_, ring)| ring.entries.iter().cloned())
            .collect();
        all.sort_by_key(|e| (e.time, e.seq));
        if let Some(n) = n {
            let skip = all.len().saturating_sub(n);
            all.drain(..skip);
        }
        all
    }

    /// Entries after sequence number `seq` still in the buffers, in order: what a
    /// follower that fell behind the broadcast missed.
    pub fn after(&self, services: &[String], seq: Option<u64>) -> Vec<Arc<Entry>> {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Arc<Entry>> = rings
            .iter()
            .filter(|(name, _)| services.is_empty() || services.contains(name))
            .flat_map(|(_, ring)| ring.entries.iter().filter(|e| Some(e.seq) > seq).cloned())
            .collect();
        out.sort_by_key(|e| e.seq);
        out
    }

    /// The sequence number the next entry will get.
    pub fn next_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.tx.subscribe()
    }

    pub fn ring_stats(&self, service: &str) -> (usize, usize) {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings
            .get(service)
            .map(|r| (r.len(), r.bytes()))
            .unwrap_or((0, 0))
    }
}

/// Splits a byte stream into lines of at most `MAX_LINE_BYTES`.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn feed(&mut self, data: &[u8], mut emit: impl FnMut(String)) {
        for &b in data {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                emit(String::from_utf8_lossy(&line).into_owned());
            } else {
                self.buf.push(b);
                if self.buf.len() >= MAX_LINE_BYTES {
                    let line = std::mem::take(&mut self.buf);
                    emit(String::from_utf8_lossy(&line).into_owned());
                }
            }
        }
    }

    pub fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            emit(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// Copies a process's output into a service's buffer until EOF.
pub async fn capture(store: Arc<LogStore>, service: String, mut pipe: impl AsyncRead + Unpin) {
    let mut split = LineSplitter::default();
    let mut buf = vec![0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => split.feed(&buf[..n], |line| store.write(&service, line)),
        }
    }
    split.finish(|line| store.write(&service, line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_stays_within_its_bound_and_keeps_the_newest() {
        let store = LogStore::new(false);
        for i in 0..10_000 {
            store.write("svc", format!("line {i:05} {}", "x".repeat(40)));
        }
        let (len, bytes) = store.ring_stats("svc");
        assert!(bytes <= MAX_LOG_BYTES, "{bytes}");
        assert!(len > 1000, "{len}");
        let last = store.last(&["svc".into()], Some(2));
        assert_eq!(last.len(), 2);
        assert!(last[1].message.starts_with("line 09999"));
        assert!(last[0].message.starts_with("line 09998"));
        assert_eq!(store.last(&[], None).len(), len);
    }

    #[test]
    fn a_lagging_follower_recovers_missed_entries_from_the_buffers() {
        let store = LogStore::new(false);
        store.write("a", "old".into());
        let seen = store.next_seq().checked_sub(1);
        store.write("a", "1".into());
        store.write("b", "2".into());
        store.write("a", "3".into());
        let msgs = |v: Vec<Arc<Entry>>| v.iter().map(|e| e.message.clone()).collect::<Vec<_>>();
        assert_eq!(msgs(store.after(&[], seen)), ["1", "2", "3"]);
        assert_eq!(msgs(store.after(&["a".into()], seen)), ["1", "3"]);
        assert_eq!(msgs(store.after(&[], None)).len(), 4);
    }

    #[test]
    fn lines_are_capped_and_split() {
        let mut split = LineSplitter::default();
        let mut out = vec![];
        split.feed(b"a\r\nb", |l| out.push(l));
        split.feed(b"c\n", |l| out.push(l));
        split.feed(&vec![b'z'; MAX_LINE_BYTES + 10], |l| out.push(l));
        split.finish(|l| out.push(l));
        assert_eq!(out[0], "a");
        assert_eq!(out[1], "bc");
        assert_eq!(out[2].len(), MAX_LINE_BYTES);
        assert_eq!(out[3].len(), 10);
    }

    #[test]
    fn merges_services_in_time_order() {
        let store = LogStore::new(false);
        store.write("a", "1".into());
        store.write("b", "2".into());
        store.write("a", "3".into());
        let msgs: Vec<String> = store
            .last(&[], Some(30))
            .iter()
            .map(|e| e.message.clone())
            .collect();
        assert_eq!(msgs, ["1", "2", "3"]);
        let only_b = store.last(&["b".into()], None);
        assert_eq!(only_b.len(), 1);
        assert!(only_b[0].to_text().ends_with(" [b] 2"));
    }
}
