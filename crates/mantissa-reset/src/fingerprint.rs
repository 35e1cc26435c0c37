//! Bounded-cost fingerprints of messages and of history prefixes.
//!
//! A remembered reset must be recognised on every later call of the session
//! without rehashing the history (that would make the per-call cost grow with
//! the history). Two cheap devices keep the check O(1):
//!
//! * a message fingerprint reads at most a fixed number of bytes of the
//!   message: its role, the *length* of its content, the first and last
//!   [`EDGE_BYTES`] bytes of the content, the tool-call id, and for at most
//!   [`MAX_CALLS`] tool calls their id, name and argument length and head;
//! * a prefix fingerprint samples at most four messages of the prefix — the
//!   first, the middle, the last, and the first position where the compacted
//!   history differs from the original — plus the prefix length.
//!
//! The trade-off: an edit in the middle of a long message, or to a message of
//! the prefix that is not sampled, that keeps every sampled message and the
//! length unchanged goes unnoticed, and the remembered compaction is applied
//! to the edited history. Callers that rewrite old messages in place should
//! start a new session (or adopt the compacted history, which is always
//! recognised exactly).

use std::hash::Hasher;

use mantissa_core::{Message, Role};

/// Bytes read from each end of a message's content.
pub(crate) const EDGE_BYTES: usize = 64;
/// Tool calls of one message that enter its fingerprint.
pub(crate) const MAX_CALLS: usize = 4;

/// A small multiply-rotate hasher (in the spirit of rustc's Fx hash): fast on
/// short inputs, not DoS-resistant — it only ever compares a caller's own
/// messages with what the layer remembered for that caller's session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Default for FastHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FastHasher {
    pub(crate) fn new() -> Self {
        Self(0x2545_f491_4f6c_dd1d)
    }

    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // A final avalanche so that nearby inputs spread over all bits.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }
}

fn write_edges(h: &mut FastHasher, s: &str) {
    let b = s.as_bytes();
    h.write_usize(b.len());
    if b.len() <= 2 * EDGE_BYTES {
        h.write(b);
    } else {
        h.write(&b[..EDGE_BYTES]);
        h.write(&b[b.len() - EDGE_BYTES..]);
    }
}

/// The bounded-cost fingerprint of one message (see the module docs).
pub(crate) fn message_hash(m: &Message) -> u64 {
    let mut h = FastHasher::new();
    h.write_u8(match m.role {
        Role::System => 1,
        Role::User => 2,
        Role::Assistant => 3,
        Role::Tool => 4,
    });
    match &m.content {
        Some(c) => write_edges(&mut h, c),
        None => h.write_u64(u64::MAX),
    }
    if let Some(name) = &m.name {
        write_edges(&mut h, name);
    }
    if let Some(id) = &m.tool_call_id {
        write_edges(&mut h, id);
    }
    h.write_usize(m.tool_calls.len());
    for call in m.tool_calls.iter().take(MAX_CALLS) {
        write_edges(&mut h, &call.id);
        write_edges(&mut h, &call.function.name);
        write_edges(&mut h, &call.function.arguments);
    }
    h.finish()
}

/// Sampled fingerprint of a message sequence: its length and the hashes of at
/// most four sampled positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrefixFingerprint {
    len: u32,
    samples: [(u32, u64); 4],
}

impl PrefixFingerprint {
    /// Fingerprints `msgs`, sampling the first, middle and last message and
    /// the position `distinguish` (clamped into range).
    pub(crate) fn of(msgs: &[Message], distinguish: usize) -> Self {
        let n = msgs.len();
        let len = u32::try_from(n).unwrap_or(u32::MAX);
        let mut samples = [(0u32, 0u64); 4];
        if n > 0 {
            let idx = [0, n / 2, n - 1, distinguish.min(n - 1)];
            for (slot, i) in samples.iter_mut().zip(idx) {
                *slot = (u32::try_from(i).unwrap_or(u32::MAX), message_hash(&msgs[i]));
            }
        }
        Self { len, samples }
    }

    /// The fingerprinted length.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether `msgs` starts with the fingerprinted sequence (sampled check:
    /// at most four message hashes, whatever the history length).
    pub(crate) fn is_prefix_of(&self, msgs: &[Message]) -> bool {
        if msgs.len() < self.len() {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        let mut last_checked = u32::MAX;
        for &(i, h) in &self.samples {
            if i == last_checked {
                continue;
            }
            last_checked = i;
            match msgs.get(i as usize) {
                Some(m) if message_hash(m) == h => {}
                _ => return false,
            }
        }
        true
    }
}

/// The first index at which `a` and `b` differ (by message hash), or the
/// shorter length when one is a prefix of the other. Linear, but only run
/// once per compaction.
pub(crate) fn first_difference(a: &[Message], b: &[Message]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.len().min(b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_content_is_hashed_by_edges_and_length() {
        let a = "x".repeat(1000);
        let mut b = a.clone();
        b.replace_range(500..501, "y");
        // The documented trade-off: a change in the middle of a long message
        // with the same length is not seen.
        assert_eq!(message_hash(&Message::user(&a)), message_hash(&Message::user(&b)));
        // A change at an edge, or in length, is.
        let mut c = a.clone();
        c.replace_range(0..1, "y");
        assert_ne!(message_hash(&Message::user(&a)), message_hash(&Message::user(&c)));
        assert_ne!(
            message_hash(&Message::user(&a)),
            message_hash(&Message::user(a.clone() + "x"))
        );
        assert_ne!(
            message_hash(&Message::user("hi")),
            message_hash(&Message::assistant("hi"))
        );
    }

    #[test]
    fn prefix_fingerprint_checks_length_and_samples() {
        let msgs: Vec<Message> = (0..10).map(|i| Message::user(format!("m{i}"))).collect();
        let fp = PrefixFingerprint::of(&msgs[..6], 3);
        assert!(fp.is_prefix_of(&msgs));
        assert!(fp.is_prefix_of(&msgs[..6]));
        assert!(!fp.is_prefix_of(&msgs[..5]));
        let mut edited = msgs.clone();
        edited[3] = Message::user("other");
        assert!(!fp.is_prefix_of(&edited));
        assert!(PrefixFingerprint::of(&[], 0).is_prefix_of(&msgs));
    }
}
