//! Features of the latest user turn, as the [learned triage](super) sees them.
//!
//! Two kinds, computed in one pass over the bytes plus [`RuleTriage`]'s own
//! signal pass (reused through [`RuleTriage::text_signals`]):
//!
//! * **Dense** ([`DENSE`] values, each in `[0, 1]`): a bias, log length in
//!   bytes and words, RuleTriage's `length`, `code`, `reasoning` and
//!   `questions` signals, and code and maths markers (digit density, how many
//!   numbers, arithmetic operators, LaTeX markers `$` and `\`, line count,
//!   share of capitals, mean word length, share of non-ASCII bytes).
//! * **Hashed word n-grams**: every word (a run of ASCII letters, digits and
//!   non-ASCII bytes; letters lowercased, each digit replaced by `0` so
//!   "16" and "42" are the same word) and every pair of neighbouring words.
//!   Each is hashed with **64-bit FNV-1a** over its bytes — a bigram is the
//!   FNV-1a of `"first second"` with one space — then mixed with the
//!   MurmurHash3 64-bit finaliser, and the top `bits` bits pick a bucket.
//!   Each occurrence adds `1 / sqrt(n)` to its bucket, `n` being the number
//!   of unigrams and bigrams of the turn, so long turns do not saturate.
//!
//! The hash is part of the [model file format](super::model): a model is
//! only meaningful with the hash it was trained with. Changing the tokenizer,
//! the hash or the dense features requires a new
//! [`FORMAT_VERSION`](super::model::FORMAT_VERSION).

use mantissa_core::TierSet;

use crate::rule::RuleTriage;

/// Number of dense features (index 0 is the bias).
pub const DENSE: usize = 16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`: the token hash of the feature space.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| fnv_step(h, b))
}

#[inline(always)]
fn fnv_step(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

/// MurmurHash3's 64-bit finaliser: spreads FNV-1a's weak high bits.
#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The bucket (in `0 .. 2^bits`) of a token hash.
#[inline(always)]
pub fn bucket(hash: u64, bits: u8) -> u32 {
    (fmix64(hash) >> (64 - u32::from(bits))) as u32
}

/// The features of one turn: dense values and hashed buckets (with
/// repetitions; each counts `1 / sqrt(hashed.len())`).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// The dense features.
    pub dense: [f32; DENSE],
    /// The hashed n-gram buckets, in text order (unigram, then the bigram it
    /// ends).
    pub hashed: Vec<u32>,
}

impl Features {
    /// The weight of each hashed occurrence: `1 / sqrt(n)`.
    pub fn hashed_value(&self) -> f32 {
        hashed_value(self.hashed.len())
    }
}

pub(crate) fn hashed_value(n: usize) -> f32 {
    if n == 0 { 0.0 } else { 1.0 / (n as f32).sqrt() }
}

/// Computes features of turns for a given number of hash bits.
#[derive(Debug, Clone)]
pub struct Featurizer {
    rule: RuleTriage,
    bits: u8,
}

impl Featurizer {
    /// A featurizer hashing into `2^bits` buckets.
    pub fn new(bits: u8) -> Self {
        Self {
            rule: RuleTriage::new(&TierSet::default()),
            bits,
        }
    }

    /// The number of hash bits.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The features of `text`.
    pub fn features(&self, text: &str) -> Features {
        let mut hashed = Vec::with_capacity(text.len() / 3);
        let dense = self.visit(text, |b| hashed.push(b));
        Features { dense, hashed }
    }

    /// Computes the dense features and calls `hashed` with every hashed
    /// bucket, without allocating.
    #[inline]
    pub(crate) fn visit(&self, text: &str, mut hashed: impl FnMut(u32)) -> [f32; DENSE] {
        let bits = self.bits;
        let bytes = text.as_bytes();
        let mut uni = FNV_OFFSET;
        // FNV-1a state of "previous word + space", continued over this word.
        let mut bi = FNV_OFFSET;
        let mut have_prev = false;
        let mut in_word = false;
        let mut word_len = 0u32;
        let mut s = Stats::default();
        for &b in bytes {
            let lower = b | 0x20;
            let class = if lower.wrapping_sub(b'a') < 26 {
                s.letters += 1;
                s.upper += u32::from(b < b'a');
                Some(lower)
            } else if b.wrapping_sub(b'0') < 10 {
                s.digits += 1;
                if !in_word {
                    s.numbers += 1;
                }
                Some(b'0')
            } else if b >= 0x80 {
                s.non_ascii += 1;
                Some(b)
            } else {
                match b {
                    b'\n' => s.newlines += 1,
                    b'+' | b'*' | b'/' | b'=' | b'^' | b'<' | b'>' | b'%' => s.ops += 1,
                    b'$' | b'\\' => s.latex += 1,
                    _ => {}
                }
                None
            };
            match class {
                Some(c) => {
                    uni = fnv_step(uni, c);
                    bi = fnv_step(bi, c);
                    in_word = true;
                    word_len += 1;
                }
                None if in_word => {
                    s.words += 1;
                    s.word_bytes += word_len;
                    hashed(bucket(uni, bits));
                    if have_prev {
                        hashed(bucket(bi, bits));
                    }
                    have_prev = true;
                    bi = fnv_step(uni, b' ');
                    uni = FNV_OFFSET;
                    in_word = false;
                    word_len = 0;
                }
                None => {}
            }
        }
        if in_word {
            s.words += 1;
            s.word_bytes += word_len;
            hashed(bucket(uni, bits));
            if have_prev {
                hashed(bucket(bi, bits));
            }
        }
        let sig = self.rule.text_signals(text);
        let n = bytes.len() as f32;
        let ratio = |x: u32, of: f32, scale: f32| {
            if of > 0.0 {
                (x as f32 / of * scale).min(1.0)
            } else {
                0.0
            }
        };
        let log = |x: u32, sat: f32| ((x as f32).ln_1p() / sat.ln_1p()).min(1.0);
        [
            1.0,
            log(bytes.len() as u32, 8192.0),
            log(s.words, 2000.0),
            sig.length as f32,
            sig.code as f32,
            sig.reasoning as f32,
            sig.questions as f32,
            ratio(s.digits, n, 5.0),
            log(s.numbers, 50.0),
            (s.ops as f32 / 10.0).min(1.0),
            (s.latex as f32 / 4.0).min(1.0),
            log(s.newlines, 100.0),
            ratio(s.upper, s.letters as f32, 4.0),
            if s.words > 0 {
                (s.word_bytes as f32 / s.words as f32 / 10.0).min(1.0)
            } else {
                0.0
            },
            ratio(s.non_ascii, n, 4.0),
            // Several sentences ending in a question.
            if bytes.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'?') {
                1.0
            } else {
                0.0
            },
        ]
    }
}

#[derive(Debug, Default)]
struct Stats {
    letters: u32,
    upper: u32,
    digits: u32,
    numbers: u32,
    non_ascii: u32,
    newlines: u32,
    ops: u32,
    latex: u32,
    words: u32,
    word_bytes: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference (Fowler/Noll/Vo) test suite.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn buckets_are_stable_across_builds() {
        // Pinned values: if this fails, the feature space changed and the
        // model format version must be bumped.
        let f = Featurizer::new(17);
        let feats = f.features("Solve 16 + x");
        let expected: Vec<u32> = vec![
            bucket(fnv1a(b"solve"), 17),
            bucket(fnv1a(b"00"), 17),
            bucket(fnv1a(b"solve 00"), 17),
            bucket(fnv1a(b"x"), 17),
            bucket(fnv1a(b"00 x"), 17),
        ];
        assert_eq!(feats.hashed, expected);
        assert_eq!(bucket(fnv1a(b"solve"), 17), PINNED_SOLVE);
        assert_eq!(feats.dense[0], 1.0);
    }

    const PINNED_SOLVE: u32 = 71_788;

    #[test]
    fn words_are_normalised() {
        let f = Featurizer::new(16);
        assert_eq!(
            f.features("Hello, WORLD 42").hashed,
            f.features("hello world 17").hashed
        );
        assert_ne!(f.features("hello world").hashed, f.features("world hello").hashed);
        assert!(f.features("").hashed.is_empty());
        assert_eq!(f.features("").dense[1], 0.0);
    }

    #[test]
    fn maths_and_code_markers_fire() {
        let f = Featurizer::new(16);
        let maths = f.features("Compute $\\frac{3}{4} + 2 = x$ for 12 apples and 7 pears.");
        let prose = f.features("Tell me about the history of the river and its towns.");
        assert!(maths.dense[7] > prose.dense[7], "digit density");
        assert!(maths.dense[9] > 0.0 && prose.dense[9] == 0.0, "operators");
        assert!(maths.dense[10] > 0.0 && prose.dense[10] == 0.0, "latex");
        let code = f.features("Why does this fail?\n```\nfn main() { let x = 1; }\n```");
        assert!(code.dense[4] > 0.9, "rule code signal");
    }
}
