//! The in-memory store's sharded map: one [`Shard`] is an index from session
//! id to slot plus the sessions in a slab, with the clock-hand idle sweep and
//! the sampled capacity eviction. [`MemorySessionStore`](super::MemorySessionStore)
//! keeps one `Mutex<Shard>` per shard and the counters across them.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use mantissa_core::SessionId;
use tokio::time::Instant;

use crate::session::SessionState;

/// Shard accesses per step of the idle-sweeping clock hand.
const SWEEP_EVERY: u32 = 4;

/// Sessions examined to choose a capacity victim (the least recently active
/// of the sample; all of them when the shard holds no more).
const EVICTION_SAMPLE: usize = 16;

/// A session id with its (keyed, DoS-resistant) hash computed once: the same
/// hash picks the shard and probes the shard's index.
#[derive(Debug, Clone)]
pub(super) struct Key {
    pub(super) hash: u64,
    pub(super) id: SessionId,
}

impl Key {
    /// The key of `id` under the store's keyed `hasher`.
    pub(super) fn new(hasher: &RandomState, id: &SessionId) -> Self {
        Self {
            hash: hasher.hash_one(id.as_str()),
            id: id.clone(),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.id == other.id
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a precomputed hash through.
#[derive(Debug, Default, Clone, Copy)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

/// A session in its slot. The id is kept without its hash (8 bytes less per
/// session); the rare removals recompute the hash.
#[derive(Debug)]
pub(super) struct Node {
    id: SessionId,
    pub(super) state: SessionState,
}

/// One shard: an index from id to slot and the sessions in a slab. There is
/// no recency list to maintain on each access (that would touch two more
/// sessions' memory per call): idle sessions are found by a clock hand that
/// advances one slot per access, and a capacity victim is the least recently
/// active of a sample.
#[derive(Debug)]
pub(super) struct Shard {
    index: HashMap<Key, u32, BuildHasherDefault<PassThrough>>,
    slots: Vec<Option<Node>>,
    free: Vec<u32>,
    hand: usize,
    ticks: u32,
}

impl Shard {
    pub(super) fn new() -> Self {
        Self {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            ticks: 0,
        }
    }

    /// The slot of `key`, if the shard holds it.
    pub(super) fn find(&self, key: &Key) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// The state in slot `i`.
    pub(super) fn state(&self, i: u32) -> Option<&SessionState> {
        self.slots.get(i as usize)?.as_ref().map(|n| &n.state)
    }

    pub(super) fn node(&mut self, i: u32) -> Option<&mut Node> {
        self.slots.get_mut(i as usize).and_then(Option::as_mut)
    }

    /// Counts one access; true every [`SWEEP_EVERY`] accesses, when the
    /// clock hand should move one slot. (A slot the hand checks is usually
    /// not in cache, so checking on every access would add a cache miss to
    /// every call.)
    pub(super) fn tick(&mut self) -> bool {
        self.ticks = self.ticks.wrapping_add(1);
        self.ticks % SWEEP_EVERY == 0
    }

    pub(super) fn remove_slot(&mut self, i: u32, hasher: &RandomState) -> Option<Node> {
        let node = self.slots.get_mut(i as usize).and_then(Option::take)?;
        self.index.remove(&Key::new(hasher, &node.id));
        self.free.push(i);
        Some(node)
    }

    pub(super) fn insert(&mut self, key: Key, state: SessionState) -> u32 {
        let node = Node {
            id: key.id.clone(),
            state,
        };
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.slots.get_mut(i as usize) {
                    *slot = Some(node);
                }
                i
            }
            None => {
                self.slots.push(Some(node));
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.index.insert(key, i);
        i
    }

    /// Advances the clock hand by `steps` slots (at most one lap), removing
    /// the sessions it passes that are `expired`. Returns how many it removed.
    pub(super) fn sweep(
        &mut self,
        steps: usize,
        hasher: &RandomState,
        expired: impl Fn(&SessionState) -> bool,
    ) -> usize {
        let mut evicted = 0;
        let n = self.slots.len();
        if n == 0 {
            return 0;
        }
        for _ in 0..steps.min(n) {
            self.hand = (self.hand + 1) % n;
            let i = self.hand;
            let due = self.slots[i].as_ref().is_some_and(|node| expired(&node.state));
            if due
                && self
                    .remove_slot(u32::try_from(i).unwrap_or(u32::MAX), hasher)
                    .is_some()
            {
                evicted += 1;
            }
        }
        evicted
    }

    /// Slots in the slab (occupied or free): the length of a full sweep.
    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The least recently active of up to [`EVICTION_SAMPLE`] sessions,
    /// starting at a position derived from `seed`.
    pub(super) fn victim(&self, seed: u64) -> Option<u32> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let start = (seed as usize) % n;
        let mut best: Option<(Instant, u32)> = None;
        let mut seen = 0;
        let exact = self.len() <= EVICTION_SAMPLE;
        let limit = if exact { n } else { n.min(4 * EVICTION_SAMPLE) };
        for k in 0..limit {
            let i = (start + k) % n;
            if let Some(node) = &self.slots[i] {
                let at = node.state.last_activity();
                if best.is_none_or(|(t, _)| at < t) {
                    best = Some((at, u32::try_from(i).unwrap_or(u32::MAX)));
                }
                seen += 1;
                if seen == EVICTION_SAMPLE && !exact {
                    break;
                }
            }
        }
        best.map(|(_, i)| i)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Bytes held by the shard's index, slab and free list.
    pub(super) fn bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown: one control byte per bucket; buckets = capacity rounded
        // up to a power of two at 7/8 load.
        let buckets = (self.index.capacity() * 8 / 7).next_power_of_two();
        buckets * (size_of::<(Key, u32)>() + 1)
            + self.slots.capacity() * size_of::<Option<Node>>()
            + self.free.capacity() * size_of::<u32>()
    }

    /// Per-session bytes of a shard, computed from type sizes: the session's
    /// slot (state + id, as an `Option`) and its index entry (id + slot
    /// number + one control byte), before hash-table and vector slack.
    pub(super) fn bytes_per_session_lower_bound() -> usize {
        use std::mem::size_of;
        size_of::<Option<Node>>() + size_of::<(Key, u32)>() + 1
    }
}
