//! A recording `tracing` subscriber for tests: captures spans (name, fields,
//! parent, whether closed) and events (fields, parent) so a test can assert
//! the span tree that the mantissa layers produce.
//!
//! The current span is tracked per subscriber, not per thread: use it on a
//! current-thread runtime ([`SpanCapture::run`] builds one).
//!
//! ```
//! use mantissa_mock::trace::SpanCapture;
//!
//! let capture = SpanCapture::default();
//! capture.run(async {
//!     let span = tracing::info_span!("outer", answer = 42);
//!     let _enter = span.enter();
//!     tracing::info!(step = "inside");
//! });
//! let outer = capture.span("outer");
//! assert_eq!(outer.get("answer"), Some("42"));
//! assert_eq!(capture.events()[0].parent, Some(outer.id));
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A `tracing` subscriber that records every span and event. Cheap to clone;
/// clones share the record.
#[derive(Debug, Clone, Default)]
pub struct SpanCapture(Arc<Mutex<Captured>>);

#[derive(Debug, Default)]
struct Captured {
    spans: Vec<SpanRecord>,
    events: Vec<EventRecord>,
    stack: Vec<u64>,
}

/// One recorded span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The span's id (1-based, in creation order).
    pub id: u64,
    /// The span's name.
    pub name: &'static str,
    /// The parent span's id.
    pub parent: Option<u64>,
    /// Every field recorded on the span (at creation or later), as text.
    pub fields: BTreeMap<String, String>,
    /// Open handles.
    pub refs: usize,
    /// Whether the span was closed.
    pub closed: bool,
}

impl SpanRecord {
    /// A field's recorded value.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

/// One recorded event.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The span the event happened in.
    pub parent: Option<u64>,
    /// The event's fields, as text (the message is `message`).
    pub fields: BTreeMap<String, String>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl SpanCapture {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every span recorded so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.lock().spans.clone()
    }

    /// Every event recorded so far.
    pub fn events(&self) -> Vec<EventRecord> {
        self.lock().events.clone()
    }

    /// The only span named `name`.
    ///
    /// # Panics
    ///
    /// If there is not exactly one such span (this is a test assertion).
    pub fn span(&self, name: &str) -> SpanRecord {
        let mut found: Vec<_> = self.spans().into_iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "spans named {name}: {found:?}");
        found.remove(0)
    }

    /// Runs `f` to completion on a new current-thread runtime with this
    /// subscriber as the default.
    ///
    /// # Panics
    ///
    /// If the runtime cannot be built.
    #[allow(clippy::expect_used)] // a test utility: no runtime, no test
    pub fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime");
        tracing::subscriber::with_default(self.clone(), || {
            // A callsite first hit on another thread with no subscriber is
            // cached as "never": ask every callsite again under this one.
            tracing::callsite::rebuild_interest_cache();
            rt.block_on(f)
        })
    }

    fn parent_of(c: &Captured, is_root: bool, explicit: Option<&tracing::span::Id>) -> Option<u64> {
        if is_root {
            None
        } else if let Some(p) = explicit {
            Some(p.into_u64())
        } else {
            c.stack.last().copied()
        }
    }
}

impl tracing::Subscriber for SpanCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut c = self.lock();
        let id = c.spans.len() as u64 + 1;
        let parent = Self::parent_of(&c, attrs.is_root(), attrs.parent());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        c.spans.push(SpanRecord {
            id,
            name: attrs.metadata().name(),
            parent,
            fields,
            refs: 1,
            closed: false,
        });
        tracing::span::Id::from_u64(id)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut c = self.lock();
        if let Some(s) = c.spans.get_mut(span.into_u64() as usize - 1) {
            values.record(&mut Fields(&mut s.fields));
        }
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut c = self.lock();
        let parent = Self::parent_of(&c, event.is_root(), event.parent());
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        c.events.push(EventRecord { parent, fields });
    }

    fn enter(&self, span: &tracing::span::Id) {
        self.lock().stack.push(span.into_u64());
    }

    fn exit(&self, span: &tracing::span::Id) {
        let mut c = self.lock();
        if let Some(pos) = c.stack.iter().rposition(|s| *s == span.into_u64()) {
            c.stack.remove(pos);
        }
    }

    fn clone_span(&self, span: &tracing::span::Id) -> tracing::span::Id {
        if let Some(s) = self.lock().spans.get_mut(span.into_u64() as usize - 1) {
            s.refs += 1;
        }
        span.clone()
    }

    fn try_close(&self, span: tracing::span::Id) -> bool {
        let mut c = self.lock();
        match c.spans.get_mut(span.into_u64() as usize - 1) {
            Some(s) => {
                s.refs = s.refs.saturating_sub(1);
                s.closed = s.refs == 0;
                s.closed
            }
            None => false,
        }
    }
}
