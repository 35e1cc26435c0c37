use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use mantissa_core::{EventSink, HealthEvent};

/// Default number of events that may wait for the writer thread.
const DEFAULT_CAPACITY: usize = 4096;

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// An [`EventSink`] that appends each event as one JSON object per line.
///
/// `record` never blocks: it hands the event to a bounded channel read by a
/// background writer thread, and counts the event as dropped when the channel
/// is full. The writer flushes whenever the channel runs empty; dropping the
/// sink writes what is queued, flushes and joins the thread.
///
/// ```
/// use std::time::Duration;
/// use mantissa_core::{EventKind, EventSink, HealthEvent, Outcome};
/// use mantissa_health::JsonLinesSink;
///
/// let path = std::env::temp_dir().join(format!("mantissa-doc-{}.jsonl", std::process::id()));
/// let sink = JsonLinesSink::create(&path)?;
/// sink.record(&HealthEvent::now(
///     "trader".into(), "s1".into(), EventKind::Tool, "get_price", Outcome::Success,
///     Duration::from_millis(3),
/// ));
/// drop(sink); // flushes
/// let text = std::fs::read_to_string(&path)?;
/// let event: HealthEvent = serde_json::from_str(text.lines().next().unwrap())?;
/// assert_eq!(&*event.subject, "get_price");
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JsonLinesSink {
    path: PathBuf,
    tx: Option<SyncSender<HealthEvent>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field("path", &self.path)
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl JsonLinesSink {
    /// Opens (creating or appending to) `path` with room for 4096 queued events.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::with_capacity(path, DEFAULT_CAPACITY)
    }

    /// Opens (creating or appending to) `path` with room for `capacity` queued
    /// events (at least 1).
    pub fn with_capacity(path: impl AsRef<Path>, capacity: usize) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (tx, rx) = sync_channel(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer = {
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("mantissa-jsonl".to_owned())
                .spawn(move || write_loop(rx, BufWriter::new(file), &counters))?
        };
        Ok(Self {
            path,
            tx: Some(tx),
            writer: Some(writer),
            counters,
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Events dropped because the queue was full or the writer had stopped.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Events that could not be serialized or written (I/O errors).
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }
}

fn write_loop(rx: Receiver<HealthEvent>, mut out: BufWriter<File>, counters: &Counters) {
    let write_one = |out: &mut BufWriter<File>, e: &HealthEvent| {
        let ok = serde_json::to_writer(&mut *out, e).is_ok() && out.write_all(b"\n").is_ok();
        let counter = if ok { &counters.written } else { &counters.failed };
        counter.fetch_add(1, Ordering::Relaxed);
    };
    while let Ok(event) = rx.recv() {
        write_one(&mut out, &event);
        while let Ok(event) = rx.try_recv() {
            write_one(&mut out, &event);
        }
        if out.flush().is_err() {
            tracing::warn!("mantissa-health: cannot flush the JSON-lines event file");
        }
    }
    let _ = out.flush();
}

impl EventSink for JsonLinesSink {
    fn record(&self, event: &HealthEvent) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(event.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for JsonLinesSink {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}
