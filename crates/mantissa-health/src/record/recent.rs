//! A per-thread memory of the series the latest calls resolved to, per
//! layer: a call whose raw labels (kind, agent, model or tool, tier) match
//! one of the last few seen on its thread by the same layer skips label
//! folding and the cache lookup (the two cost more than everything else the
//! layer does per call).
//!
//! It lives in the thread, not in the service, because a router clones a
//! stored service for every call: a memory inside the service would die with
//! each clone and never hit (design review §1 row 10). Entries hold a
//! `Weak` of their layer's state: it keeps the allocation (so its address
//! cannot be reused by another layer while an entry names it) but not the
//! state (a dropped layer's sinks are released).

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use mantissa_core::{AgentName, EventKind, Tier};

use crate::request::ObservedRequest;

use super::{Series, Shared};

/// Entries per thread (replaced round-robin).
const WAYS: usize = 8;

struct Entry {
    shared: Weak<Shared>,
    kind: EventKind,
    agent: AgentName,
    subject: Option<Box<str>>,
    tier: Option<Tier>,
    series: Arc<Series>,
}

impl Entry {
    #[inline]
    fn matches<R: ObservedRequest>(&self, shared: &Arc<Shared>, req: &R) -> bool {
        std::ptr::eq(self.shared.as_ptr(), Arc::as_ptr(shared))
            && self.kind == R::KIND
            && self.agent.as_str() == req.agent().as_str()
            && self.subject.as_deref() == req.subject()
            && self.tier.as_ref().map(Tier::as_str) == req.tier().map(Tier::as_str)
    }
}

#[derive(Default)]
struct Recent {
    entries: [Option<Entry>; WAYS],
    next: usize,
}

thread_local! {
    static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
}

/// The series `shared` resolved `req`'s labels to on this thread lately, if any.
#[inline]
pub(super) fn get<R: ObservedRequest>(shared: &Arc<Shared>, req: &R) -> Option<Arc<Series>> {
    RECENT
        .try_with(|r| {
            let r = r.try_borrow().ok()?;
            r.entries
                .iter()
                .flatten()
                .find(|e| e.matches(shared, req))
                .map(|e| e.series.clone())
        })
        .ok()
        .flatten()
}

/// Remembers that `shared` resolved `req`'s labels to `series`.
pub(super) fn put<R: ObservedRequest>(shared: &Arc<Shared>, req: &R, series: &Arc<Series>) {
    let entry = Entry {
        shared: Arc::downgrade(shared),
        kind: R::KIND,
        agent: req.agent().clone(),
        subject: req.subject().map(Box::from),
        tier: req.tier().cloned(),
        series: series.clone(),
    };
    let _ = RECENT.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            let i = r.next % WAYS;
            r.next = r.next.wrapping_add(1);
            // The replaced entry is dropped after the borrow ends.
            let old = r.entries[i].replace(entry);
            drop(r);
            drop(old);
        }
    });
}
