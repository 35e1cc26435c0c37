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

use std::hash::{BuildHasher, Hasher};

use mantissa_core::{Message, Role};

/// Bytes read from each end of a message's content.
pub(crate) const EDGE_BYTES: usize = 64;
/// Tool calls of one message that enter its fingerprint.
pub(crate) const MAX_CALLS: usize = 4;

/// The message hasher: foldhash with a fixed seed, so the same message hashes
/// the same in every process (a shared session store compares fingerprints
/// written by other replicas of the same build). Fast on short inputs; not
/// DoS-resistant, which is not needed: it only ever compares a caller's own
/// messages with what the layer remembered for that caller's session.
pub(crate) type FastHasher = foldhash::fast::FoldHasher<'static>;

/// The fixed-seed hasher state used for fingerprints and the layer's maps.
pub(crate) const HASH_STATE: foldhash::fast::FixedState =
    foldhash::fast::FixedState::with_seed(0x2545_f491_4f6c_dd1d);

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
    let mut h = HASH_STATE.build_hasher();
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
    /// Its parts, for the wire form of a shared session.
    pub(crate) fn parts(&self) -> (u32, [(u32, u64); 4]) {
        (self.len, self.samples)
    }

    /// From [`parts`](Self::parts).
    pub(crate) fn from_parts((len, samples): (u32, [(u32, u64); 4])) -> Self {
        Self { len, samples }
    }

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
