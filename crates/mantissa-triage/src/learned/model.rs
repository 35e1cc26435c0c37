//! [`Model`]: per-tier success models over hashed features, and their file
//! format.
//!
//! # What it predicts
//!
//! One logistic model ("head") per tier of the training data, cheapest
//! first: `P(tier k succeeds on this turn)`. The [`score`](Model::score) is
//! how much a stronger tier is needed: the expected gain of the strongest
//! tier over the cheapest, `p_top − p_bottom`, mapped from `[−1, 1]` to
//! `[0, 1]` (0.5 = no difference expected).
//!
//! **Length prior.** With a length weight `a > 0` (the default when
//! training, [`TrainConfig::length_weight`](super::TrainConfig)) and without the
//! task-kind prior below, the score is `a · P_len + (1 − a) · P_gain`, where `P_len` is the turn's byte length
//! and `P_gain` its gain as percentiles of the training prompts (two tables
//! of [`PRIOR_QUANTILES`] quantiles in the file). Prompt length is the
//! signal that transfers best to subjects the model never saw (a harder
//! question is usually a longer one); the n-gram heads refine it where the
//! wording is familiar. Validated on held-out subjects in the README.
//!
//! **Task-kind prior.** One more head, the *domain head*, predicts how often
//! the cheapest tier fails on *this kind of task*: it is trained on each
//! training domain's failure rate of the cheapest tier (an MMLU subject,
//! GSM8K), not on single outcomes. Per-prompt outcomes say which question
//! of a benchmark is hard; the domain rates say which kinds of task a cheap
//! model is weak at (maths, logic, code), and that is what carries over to
//! open-ended chat, where the cheap tier falls behind on maths, reasoning,
//! coding and extraction and not on writing or role play. With a domain
//! weight `d > 0` ([`TrainConfig::domain_weight`](super::TrainConfig)), the
//! score is `a · P_len + d · P_kind + (1 − a − d) · P_gain`, `P_kind` being
//! the domain head's failure probability as a percentile of the training
//! prompts (a third table).
//!
//! # File format (version [`FORMAT_VERSION`])
//!
//! All integers and floats little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `MTRIAGE\0` |
//! | 4 | format version (`u32`) |
//! | 1 | hash bits `b` (8 ..= 22) |
//! | 2 | dense features (`u16`, must be [`DENSE`]) |
//! | 1 | tiers `k` (2 ..= [`MAX_TIERS`]) |
//! | per tier | name length (`u8`) and UTF-8 name |
//! | 2 | quantile count `q` (`u16`) |
//! | 4·q | quantiles of the training prompts' scores (`f32`, non-decreasing) |
//! | 4 | length weight `a` (`f32`, in `[0, 1]`) |
//! | 4 | domain weight `d` (`f32`, in `[0, 1]`, `a + d ≤ 1`) |
//! | 2 | prior quantile count `p` (`u16`) |
//! | 4·p, 4·p, 4·p | quantiles of the training prompts' byte lengths, of their gains, and of their domain-head failure probabilities |
//! | 4·(DENSE + 2^b)·(k + 1) | weights (`f32`), feature-major: the `k` tier heads, then the domain head, of one feature are adjacent |
//! | 8 | FNV-1a 64 of every byte before it |
//!
//! The weights are only meaningful with the [feature hash](super::features)
//! they were trained with, which is fixed by the version.

use std::path::Path;

use mantissa_core::ConfigError;

use super::features::{DENSE, Featurizer, fnv1a, hashed_value};
use crate::calibrate::calibrate;
use crate::decision::Boundaries;

/// The model file format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 3;
/// How many quantiles the length and gain tables of the prior hold.
pub const PRIOR_QUANTILES: usize = 101;
/// The most tiers a model holds heads for.
pub const MAX_TIERS: usize = 8;
const MAGIC: &[u8; 8] = b"MTRIAGE\0";

/// Why a model file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file could not be read or written.
    #[error("model file `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes do not start with the model magic.
    #[error("not a mantissa triage model (bad magic bytes)")]
    NotAModel,
    /// The file has another format version.
    #[error("unsupported model format version {found} (this build reads version {expected})")]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The file ends early.
    #[error("truncated model file: {0}")]
    Truncated(&'static str),
    /// The checksum does not match the contents.
    #[error("corrupt model file: checksum {found:#018x} does not match contents {expected:#018x}")]
    Checksum {
        /// The checksum of the contents.
        expected: u64,
        /// The checksum stored in the file.
        found: u64,
    },
    /// A header field is out of range.
    #[error("invalid model file: {0}")]
    Invalid(String),
    /// The model built into this crate could not be read (a build problem).
    #[error("the built-in model is unusable: {0}")]
    Builtin(String),
}

/// A learned triage model. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    tiers: Vec<String>,
    bits: u8,
    quantiles: Vec<f32>,
    /// The length prior's weight in `[0, 1]` and its two tables: quantiles
    /// of the training prompts' byte lengths and of their gains.
    length_weight: f32,
    length_q: Vec<f32>,
    gain_q: Vec<f32>,
    /// The task-kind prior's weight in `[0, 1]` and its table: quantiles of
    /// the training prompts' domain-head failure probabilities.
    domain_weight: f32,
    domain_q: Vec<f32>,
    /// `(DENSE + 2^bits) * (tiers.len() + 1)`, feature-major: the tier
    /// heads, then the domain head.
    weights: Vec<f32>,
}

impl Model {
    /// A model with all weights 0 (every score 0.5) for `tiers` (cheapest
    /// first) over `2^bits` hash buckets.
    pub fn zeros(tiers: Vec<String>, bits: u8) -> Result<Self, ModelError> {
        check_tiers(&tiers)?;
        check_bits(bits)?;
        let dims = DENSE + (1usize << bits);
        Ok(Self {
            weights: vec![0.0; dims * (tiers.len() + 1)],
            tiers,
            bits,
            quantiles: Vec::new(),
            length_weight: 0.0,
            length_q: Vec::new(),
            gain_q: Vec::new(),
            domain_weight: 0.0,
            domain_q: Vec::new(),
        })
    }

    /// The weight of the length prior in the score (see the module docs).
    pub fn length_weight(&self) -> f32 {
        self.length_weight
    }

    /// The weight of the task-kind prior in the score (see the module
    /// docs); 0 when the training data had fewer than two domains.
    pub fn domain_weight(&self) -> f32 {
        self.domain_weight
    }

    /// Sets the priors: the length and domain weights and the three tables
    /// (each of the same length).
    pub(crate) fn set_prior(&mut self, weights: (f32, f32), tables: [Vec<f32>; 3]) {
        let [length_q, gain_q, domain_q] = tables;
        debug_assert!(length_q.len() == gain_q.len() && gain_q.len() == domain_q.len());
        (self.length_weight, self.domain_weight) = weights;
        self.length_q = length_q;
        self.gain_q = gain_q;
        self.domain_q = domain_q;
    }

    /// Weight columns per feature: the tier heads and the domain head.
    #[inline]
    pub(crate) fn cols(&self) -> usize {
        self.tiers.len() + 1
    }

    /// The tiers of the heads, cheapest first.
    pub fn tiers(&self) -> &[String] {
        &self.tiers
    }

    /// The number of hash bits.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Quantiles of the training prompts' scores (0 %, 1 %, …, 100 %), the
    /// sample that [`boundaries`](Self::boundaries) calibrates on.
    pub fn quantiles(&self) -> &[f32] {
        &self.quantiles
    }

    pub(crate) fn set_quantiles(&mut self, q: Vec<f32>) {
        self.quantiles = q;
    }

    pub(crate) fn weights_mut(&mut self) -> &mut [f32] {
        &mut self.weights
    }

    /// A featurizer matching this model.
    pub fn featurizer(&self) -> Featurizer {
        Featurizer::new(self.bits)
    }

    /// The head logits of `text`: the tier heads cheapest first, then the
    /// domain head (only the first `tiers().len() + 1` entries are
    /// meaningful).
    #[inline]
    pub fn logits_with(&self, f: &Featurizer, text: &str) -> [f32; MAX_TIERS + 1] {
        // The usual ladders get a loop the compiler unrolls per bucket.
        match self.cols() {
            3 => self.logits_k::<3>(f, text),
            4 => self.logits_k::<4>(f, text),
            _ => self.logits_k::<0>(f, text),
        }
    }

    /// [`logits_with`](Self::logits_with) for `K` columns (0: any number,
    /// read at run time).
    #[inline(always)]
    fn logits_k<const K: usize>(&self, f: &Featurizer, text: &str) -> [f32; MAX_TIERS + 1] {
        let k = if K > 0 { K } else { self.cols() };
        let mut hashed = [0.0f32; MAX_TIERS + 1];
        let mut n = 0usize;
        let w = &self.weights;
        let dense = f.visit(text, |b| {
            let at = (DENSE + b as usize) * k;
            if let Some(row) = w.get(at..at + k) {
                for (acc, x) in hashed.iter_mut().zip(row) {
                    *acc += x;
                }
            }
            n += 1;
        });
        let v = hashed_value(n);
        let mut out = [0.0f32; MAX_TIERS + 1];
        for (h, o) in out.iter_mut().enumerate().take(k) {
            let mut z = hashed[h] * v;
            for (i, d) in dense.iter().enumerate() {
                z += d * w[i * k + h];
            }
            *o = z;
        }
        out
    }

    /// `P(tier succeeds)` for each tier, cheapest first.
    pub fn success(&self, text: &str) -> Vec<f64> {
        let f = self.featurizer();
        let z = self.logits_with(&f, text);
        z[..self.tiers.len()]
            .iter()
            .map(|z| sigmoid(f64::from(*z)))
            .collect()
    }

    /// The need for a stronger tier in `[0, 1]` (see the module docs).
    pub fn score(&self, text: &str) -> f64 {
        self.score_with(&self.featurizer(), text)
    }

    /// [`score`](Self::score) with a featurizer made once by
    /// [`featurizer`](Self::featurizer) (saves building it per call).
    #[inline]
    pub fn score_with_featurizer(&self, f: &Featurizer, text: &str) -> f64 {
        self.score_with(f, text)
    }

    #[inline]
    pub(crate) fn score_with(&self, f: &Featurizer, text: &str) -> f64 {
        let (gain, kind) = self.gain_and_kind(f, text);
        self.blend(text.len(), gain, kind)
    }

    /// The heads' gain alone: `p_top − p_bottom` mapped to `[0, 1]`.
    #[cfg(test)]
    pub(crate) fn gain_with(&self, f: &Featurizer, text: &str) -> f64 {
        self.gain_and_kind(f, text).0
    }

    /// The heads' gain and the domain head's failure probability.
    #[inline]
    pub(crate) fn gain_and_kind(&self, f: &Featurizer, text: &str) -> (f64, f64) {
        let z = self.logits_with(f, text);
        let top = self.tiers.len() - 1;
        let gain = score_of(sigmoid(f64::from(z[0])), sigmoid(f64::from(z[top])));
        (gain, sigmoid(f64::from(z[top + 1])))
    }

    /// The score of a turn of `len` bytes whose heads' gain is `gain` and
    /// domain-head failure probability `kind`: with priors, the weighted
    /// mean of the training percentiles (see the module docs).
    #[inline]
    pub(crate) fn blend(&self, len: usize, gain: f64, kind: f64) -> f64 {
        let a = f64::from(self.length_weight);
        let d = if self.domain_q.is_empty() {
            0.0
        } else {
            f64::from(self.domain_weight)
        };
        if (a <= 0.0 && d <= 0.0) || self.gain_q.is_empty() {
            return gain;
        }
        let mut s = (1.0 - a - d).max(0.0) * percentile(&self.gain_q, gain as f32);
        if a > 0.0 {
            s += a * percentile(&self.length_q, len as f32);
        }
        if d > 0.0 {
            s += d * percentile(&self.domain_q, kind as f32);
        }
        s.clamp(0.0, 1.0)
    }

    /// Boundaries for `shares` (one per tier of the ladder, cheapest first,
    /// summing to 1) calibrated on the training score quantiles.
    pub fn boundaries(&self, shares: &[f64]) -> Result<Boundaries, ConfigError> {
        let sample: Vec<f64> = self.quantiles.iter().map(|q| f64::from(*q)).collect();
        calibrate(&sample, shares)
    }

    /// Serialises the model (see the module docs for the format).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 4 * (self.weights.len() + self.quantiles.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(self.bits);
        out.extend_from_slice(&(DENSE as u16).to_le_bytes());
        out.push(self.tiers.len() as u8);
        for t in &self.tiers {
            out.push(t.len() as u8);
            out.extend_from_slice(t.as_bytes());
        }
        out.extend_from_slice(&(self.quantiles.len() as u16).to_le_bytes());
        for q in &self.quantiles {
            out.extend_from_slice(&q.to_le_bytes());
        }
        out.extend_from_slice(&self.length_weight.to_le_bytes());
        out.extend_from_slice(&self.domain_weight.to_le_bytes());
        out.extend_from_slice(&(self.length_q.len() as u16).to_le_bytes());
        for q in self.length_q.iter().chain(&self.gain_q).chain(&self.domain_q) {
            out.extend_from_slice(&q.to_le_bytes());
        }
        for w in &self.weights {
            out.extend_from_slice(&w.to_le_bytes());
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Reads a model from bytes. A wrong version, a truncated or a corrupt
    /// file is an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8, "magic")? != MAGIC {
            return Err(ModelError::NotAModel);
        }
        let version = r.u32("version")?;
        if version != FORMAT_VERSION {
            return Err(ModelError::Version {
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let Some(body_len) = bytes.len().checked_sub(8) else {
            return Err(ModelError::Truncated("checksum"));
        };
        if body_len < r.at {
            return Err(ModelError::Truncated("checksum"));
        }
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&bytes[body_len..]);
        let found = u64::from_le_bytes(stored);
        let expected = fnv1a(&bytes[..body_len]);
        if found != expected {
            return Err(ModelError::Checksum { expected, found });
        }
        let mut r = Reader {
            bytes: &bytes[..body_len],
            at: r.at,
        };
        let bits = r.u8("hash bits")?;
        check_bits(bits)?;
        let dense = usize::from(r.u16("dense count")?);
        if dense != DENSE {
            return Err(ModelError::Invalid(format!(
                "{dense} dense features, this build computes {DENSE}"
            )));
        }
        let k = usize::from(r.u8("tier count")?);
        let mut tiers = Vec::with_capacity(k);
        for _ in 0..k {
            let len = usize::from(r.u8("tier name length")?);
            let name = std::str::from_utf8(r.take(len, "tier name")?)
                .map_err(|_| ModelError::Invalid("a tier name is not UTF-8".into()))?;
            tiers.push(name.to_owned());
        }
        check_tiers(&tiers)?;
        let q = usize::from(r.u16("quantile count")?);
        let quantiles = r.f32s(q, "quantiles")?;
        if quantiles.iter().any(|q| !q.is_finite()) || quantiles.windows(2).any(|w| w[1] < w[0]) {
            return Err(ModelError::Invalid(
                "quantiles must be finite and non-decreasing".into(),
            ));
        }
        let length_weight = r.f32s(1, "length weight")?[0];
        if !(0.0..=1.0).contains(&length_weight) {
            return Err(ModelError::Invalid(format!(
                "the length weight must be in [0, 1], got {length_weight}"
            )));
        }
        let domain_weight = r.f32s(1, "domain weight")?[0];
        if !(0.0..=1.0).contains(&domain_weight) || length_weight + domain_weight > 1.0 + 1e-6 {
            return Err(ModelError::Invalid(format!(
                "the domain weight must be in [0, 1] and at most 1 minus the length weight, got {domain_weight}"
            )));
        }
        let p = usize::from(r.u16("prior quantile count")?);
        let length_q = r.f32s(p, "length quantiles")?;
        let gain_q = r.f32s(p, "gain quantiles")?;
        let domain_q = r.f32s(p, "domain quantiles")?;
        for table in [&length_q, &gain_q, &domain_q] {
            if table.iter().any(|q| !q.is_finite()) || table.windows(2).any(|w| w[1] < w[0]) {
                return Err(ModelError::Invalid(
                    "prior quantiles must be finite and non-decreasing".into(),
                ));
            }
        }
        if (length_weight > 0.0 || domain_weight > 0.0) && p < 2 {
            return Err(ModelError::Invalid(
                "a length or domain weight above 0 needs prior quantiles".into(),
            ));
        }
        let n = (DENSE + (1usize << bits)) * (k + 1);
        let weights = r.f32s(n, "weights")?;
        if r.at != r.bytes.len() {
            return Err(ModelError::Invalid(format!(
                "{} unexpected bytes after the weights",
                r.bytes.len() - r.at
            )));
        }
        if weights.iter().any(|w| !w.is_finite()) {
            return Err(ModelError::Invalid("a weight is not a finite number".into()));
        }
        Ok(Self {
            tiers,
            bits,
            quantiles,
            length_weight,
            length_q,
            gain_q,
            domain_weight,
            domain_q,
            weights,
        })
    }

    /// Reads a model file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Writes a model file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Where `x` falls in the quantile table `q` (0 %, …, 100 %), in `[0, 1]`,
/// interpolating linearly between neighbouring quantiles.
pub(crate) fn percentile(q: &[f32], x: f32) -> f64 {
    let n = q.len();
    if n < 2 {
        return 0.5;
    }
    let j = q.partition_point(|v| *v <= x);
    if j == 0 {
        return 0.0;
    }
    if j == n {
        return 1.0;
    }
    let (lo, hi) = (q[j - 1], q[j]);
    let frac = if hi > lo {
        f64::from((x - lo) / (hi - lo))
    } else {
        0.0
    };
    ((j - 1) as f64 + frac) / (n - 1) as f64
}

/// The score of a cheapest-tier and a strongest-tier success probability.
pub(crate) fn score_of(p_bottom: f64, p_top: f64) -> f64 {
    (0.5 + 0.5 * (p_top - p_bottom)).clamp(0.0, 1.0)
}

pub(crate) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn check_bits(bits: u8) -> Result<(), ModelError> {
    if !(8..=22).contains(&bits) {
        return Err(ModelError::Invalid(format!(
            "hash bits must be in 8..=22, got {bits}"
        )));
    }
    Ok(())
}

fn check_tiers(tiers: &[String]) -> Result<(), ModelError> {
    if tiers.len() < 2 || tiers.len() > MAX_TIERS {
        return Err(ModelError::Invalid(format!(
            "a model needs 2 to {MAX_TIERS} tiers, got {}",
            tiers.len()
        )));
    }
    for (i, t) in tiers.iter().enumerate() {
        if t.is_empty() || t.len() > 255 {
            return Err(ModelError::Invalid(format!(
                "tier name {i} must be 1 to 255 bytes"
            )));
        }
        if tiers[..i].contains(t) {
            return Err(ModelError::Invalid(format!("tier `{t}` appears twice")));
        }
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ModelError> {
        let end = self.at.checked_add(n).ok_or(ModelError::Truncated(what))?;
        let s = self.bytes.get(self.at..end).ok_or(ModelError::Truncated(what))?;
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ModelError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ModelError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ModelError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32s(&mut self, n: usize, what: &'static str) -> Result<Vec<f32>, ModelError> {
        let len = n.checked_mul(4).ok_or(ModelError::Truncated(what))?;
        let b = self.take(len, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Model {
        let mut m = Model::zeros(vec!["low".into(), "high".into()], 8).unwrap();
        for (i, w) in m.weights_mut().iter_mut().enumerate() {
            *w = (i as f32 * 0.37).sin();
        }
        m.set_quantiles((0..=100).map(|i| i as f32 / 100.0).collect());
        m
    }

    #[test]
    fn round_trips_through_bytes() {
        let m = small();
        let back = Model::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.score("hello there"), m.score("hello there"));
    }

    #[test]
    fn wrong_version_names_both_versions() {
        let mut b = small().to_bytes();
        b[8..12].copy_from_slice(&7u32.to_le_bytes());
        let err = Model::from_bytes(&b).unwrap_err();
        assert!(matches!(
            err,
            ModelError::Version {
                found: 7,
                expected: FORMAT_VERSION
            }
        ));
        assert_eq!(
            err.to_string(),
            format!("unsupported model format version 7 (this build reads version {FORMAT_VERSION})")
        );
    }

    #[test]
    fn corrupt_truncated_and_foreign_files_are_errors() {
        let good = small().to_bytes();
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(matches!(
            Model::from_bytes(&flipped),
            Err(ModelError::Checksum { .. })
        ));
        for len in [0, 5, 11, 12, 20, good.len() / 2, good.len() - 1] {
            let err = Model::from_bytes(&good[..len]).unwrap_err();
            assert!(
                matches!(err, ModelError::Truncated(_) | ModelError::Checksum { .. }),
                "length {len}: {err}"
            );
        }
        assert!(matches!(
            Model::from_bytes(b"PK\x03\x04 not a model"),
            Err(ModelError::NotAModel)
        ));
        // A valid checksum over an inconsistent header is still an error.
        let mut m = small();
        m.tiers.push("low".into());
        let err = Model::from_bytes(&m.to_bytes()).unwrap_err();
        assert!(matches!(err, ModelError::Invalid(_)), "{err}");
    }

    #[test]
    fn percentiles_interpolate_between_quantiles() {
        let q = [10.0, 20.0, 20.0, 40.0, 50.0];
        assert_eq!(percentile(&q, 5.0), 0.0);
        assert_eq!(percentile(&q, 10.0), 0.0);
        assert!((percentile(&q, 15.0) - 0.125).abs() < 1e-9);
        // Ties: a value equal to repeated quantiles takes the highest.
        assert!((percentile(&q, 20.0) - 0.5).abs() < 1e-9);
        assert!((percentile(&q, 30.0) - 0.625).abs() < 1e-9);
        assert_eq!(percentile(&q, 50.0), 1.0);
        assert_eq!(percentile(&q, 1e9), 1.0);
        assert_eq!(percentile(&[], 3.0), 0.5);
        assert_eq!(percentile(&q, f32::NAN), 0.0);
    }

    #[test]
    fn a_prior_round_trips_and_a_bad_one_is_invalid() {
        let mut m = small();
        let table: Vec<f32> = (0..PRIOR_QUANTILES).map(|i| i as f32).collect();
        let tenths: Vec<f32> = table.iter().map(|x| x / 100.0).collect();
        m.set_prior((0.5, 0.0), [table.clone(), tenths.clone(), tenths]);
        let back = Model::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.length_weight(), 0.5);
        // A weight outside [0, 1] behind a valid checksum.
        let mut bad = m.clone();
        bad.length_weight = 2.0;
        let err = Model::from_bytes(&bad.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("length weight"), "{err}");
        // Tables out of order.
        let mut bad = m.clone();
        bad.gain_q.reverse();
        let err = Model::from_bytes(&bad.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("prior quantiles"), "{err}");
        // A weight without tables.
        let mut bad = m;
        bad.length_q.clear();
        bad.gain_q.clear();
        bad.domain_q.clear();
        let err = Model::from_bytes(&bad.to_bytes()).unwrap_err();
        assert!(matches!(err, ModelError::Invalid(_)), "{err}");
    }

    #[test]
    fn scores_are_in_range_and_boundaries_calibrate() {
        let m = small();
        for text in ["", "a", "Prove that 2 + 2 = 4.", &"word ".repeat(500)] {
            let s = m.score(text);
            assert!((0.0..=1.0).contains(&s), "{s}");
        }
        let b = m.boundaries(&[0.8, 0.2]).unwrap();
        assert!((b.cuts()[0] - 0.8).abs() < 0.02);
        assert_eq!(
            Model::zeros(vec!["low".into(), "high".into()], 8)
                .unwrap()
                .score("x"),
            0.5
        );
    }
}
