//! Outcome records and training.
//!
//! An [`Outcome`] is one observed call: the prompt (latest user turn), the
//! tier that served it, the model, and a score in `[0, 1]` (1 = the answer
//! was good). Files of outcomes are JSON lines, the format of
//! `shared/routing/README.md` and of [`FeedbackLog`](super::FeedbackLog).
//!
//! [`train`] fits one logistic head per tier on the outcomes of that tier
//! only (bandit feedback: a line says how the tier that served it did, and
//! nothing about the others), with AdaGrad and L2, for a few epochs over a
//! seeded shuffle: the same files and settings give the same model bytes.

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::features::{DENSE, Featurizer, hashed_value};
use super::model::{MAX_TIERS, Model, ModelError, PRIOR_QUANTILES, sigmoid};

/// One observed outcome (a JSON line). Extra fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The latest user turn.
    pub prompt: String,
    /// The tier that served it.
    pub tier: String,
    /// The model that served it.
    #[serde(default)]
    pub model: String,
    /// How well it went, in `[0, 1]`.
    pub score: f64,
    /// A group (for example an MMLU subject), used to hold out whole groups
    /// in cross-validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// A bad line of an outcome or prompt file: names the line (1-based) and
/// the problem.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: line {line}: {problem}")]
pub struct LineError {
    /// The file (or `stdin`).
    pub source_name: String,
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// Parses one outcome line (`line` is 1-based, for the error).
pub fn parse_outcome(text: &str, source_name: &str, line: usize) -> Result<Outcome, LineError> {
    let err = |problem: String| LineError {
        source_name: source_name.to_owned(),
        line,
        problem,
    };
    if text.trim().is_empty() {
        return Err(err("empty line (expected a JSON object)".into()));
    }
    let o: Outcome = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    if o.tier.is_empty() {
        return Err(err("`tier` is empty".into()));
    }
    if !(o.score.is_finite() && (0.0..=1.0).contains(&o.score)) {
        return Err(err(format!("`score` must be in [0, 1], got {}", o.score)));
    }
    Ok(o)
}

/// Reads every outcome line of `reader`; the first bad line is an error.
pub fn read_outcomes(reader: impl BufRead, source_name: &str) -> Result<Vec<Outcome>, LineError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| LineError {
            source_name: source_name.to_owned(),
            line: i + 1,
            problem: e.to_string(),
        })?;
        out.push(parse_outcome(&line, source_name, i + 1)?);
    }
    Ok(out)
}

/// Training settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Hash bits (`2^bits` buckets). Defaults to 17 (about 1 MB per two tiers).
    pub bits: u8,
    /// Passes over the data. Defaults to 4.
    pub epochs: u32,
    /// AdaGrad base learning rate. Defaults to 0.02.
    pub learning_rate: f32,
    /// L2 penalty per update. Defaults to 1e-4.
    pub l2: f32,
    /// Shuffle seed. Defaults to 42.
    pub seed: u64,
    /// Tier names, cheapest first. `None` infers them: the names among
    /// `low`, `medium`, `high` in that order.
    pub tiers: Option<Vec<String>>,
    /// Weight of the length prior in the score, in `[0, 1]` (0 = the heads'
    /// gain alone; see [`Model`]'s docs). Defaults to 0.5.
    pub length_weight: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            bits: 17,
            epochs: 4,
            learning_rate: 0.02,
            l2: 1e-4,
            seed: 42,
            tiers: None,
            length_weight: 0.5,
        }
    }
}

/// Progress of a training run, handed to the callback of [`train`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The epoch just finished (from 1).
    pub epoch: u32,
    /// All epochs.
    pub epochs: u32,
    /// Mean log loss of the epoch.
    pub loss: f64,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// No outcomes.
    #[error("no outcomes to train on")]
    Empty,
    /// A tier of the data is not in the tier list.
    #[error("tier `{tier}` of outcome {index} is not one of the tiers {tiers:?} (set them, cheapest first)")]
    UnknownTier {
        /// The tier.
        tier: String,
        /// The outcome's index (from 0).
        index: usize,
        /// The known tiers.
        tiers: Vec<String>,
    },
    /// The settings or the tier list are not valid for a model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The length weight is not a number in `[0, 1]`.
    #[error("the length weight must be in [0, 1], got {0}")]
    LengthWeight(f32),
}

/// The tier names of `outcomes`, cheapest first (`low`, `medium`, `high`).
pub fn infer_tiers(outcomes: &[Outcome]) -> Result<Vec<String>, TrainError> {
    const ORDER: [&str; 3] = ["low", "medium", "high"];
    for (index, o) in outcomes.iter().enumerate() {
        if !ORDER.contains(&o.tier.as_str()) {
            return Err(TrainError::UnknownTier {
                tier: o.tier.clone(),
                index,
                tiers: ORDER.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
    }
    Ok(ORDER
        .iter()
        .filter(|t| outcomes.iter().any(|o| o.tier == **t))
        .map(|t| (*t).to_owned())
        .collect())
}

/// SplitMix64: a tiny, fixed generator so the shuffle (and the model) is the
/// same on every platform and every version of the `rand` crate.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// A turn's features as `(weight row, value)` pairs.
pub(crate) fn sparse(f: &Featurizer, text: &str) -> Vec<(u32, f32)> {
    let mut hashed = Vec::with_capacity(text.len() / 3);
    let dense = f.visit(text, |b| hashed.push(b));
    let v = hashed_value(hashed.len());
    let mut out: Vec<(u32, f32)> = dense
        .iter()
        .enumerate()
        .filter(|(_, d)| **d != 0.0)
        .map(|(i, d)| (i as u32, *d))
        .collect();
    hashed.sort_unstable();
    for b in hashed {
        let row = DENSE as u32 + b;
        match out.last_mut() {
            Some((r, x)) if *r == row => *x += v,
            _ => out.push((row, v)),
        }
    }
    out
}

/// The logit of head `h` for sparse features `x`.
pub(crate) fn logit(w: &[f32], k: usize, h: usize, x: &[(u32, f32)]) -> f32 {
    x.iter()
        .map(|(r, v)| w.get(*r as usize * k + h).copied().unwrap_or(0.0) * v)
        .sum()
}

/// Trains a model on `outcomes`; `progress` is called after every epoch.
pub fn train(
    outcomes: &[Outcome],
    config: &TrainConfig,
    mut progress: impl FnMut(Progress),
) -> Result<Model, TrainError> {
    if outcomes.is_empty() {
        return Err(TrainError::Empty);
    }
    if !(0.0..=1.0).contains(&config.length_weight) {
        return Err(TrainError::LengthWeight(config.length_weight));
    }
    let tiers = match &config.tiers {
        Some(t) => t.clone(),
        None => infer_tiers(outcomes)?,
    };
    let mut model = Model::zeros(tiers.clone(), config.bits)?;
    let f = model.featurizer();
    let k = tiers.len();
    // Features once per distinct prompt.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut feats: Vec<Vec<(u32, f32)>> = Vec::new();
    let mut lengths: Vec<f32> = Vec::new();
    let mut examples = Vec::with_capacity(outcomes.len());
    for (index, o) in outcomes.iter().enumerate() {
        let Some(head) = tiers.iter().position(|t| *t == o.tier) else {
            return Err(TrainError::UnknownTier {
                tier: o.tier.clone(),
                index,
                tiers,
            });
        };
        let id = *ids.entry(o.prompt.as_str()).or_insert_with(|| {
            feats.push(sparse(&f, &o.prompt));
            lengths.push(o.prompt.len() as f32);
            feats.len() - 1
        });
        examples.push((id, head, o.score as f32));
    }
    // Start each head at its base rate.
    {
        let w = model.weights_mut();
        // The bias row (dense feature 0) holds one weight per head.
        for (h, bias) in w.iter_mut().take(k).enumerate() {
            let (sum, n) = examples
                .iter()
                .filter(|e| e.1 == h)
                .fold((0.0f64, 0usize), |(s, n), e| (s + f64::from(e.2), n + 1));
            if n > 0 {
                let p = ((sum + 0.5) / (n as f64 + 1.0)).clamp(1e-3, 1.0 - 1e-3);
                *bias = (p / (1.0 - p)).ln() as f32;
            }
        }
    }
    let mut g2 = vec![0.0f32; model.weights_mut().len()];
    let mut rng = SplitMix(config.seed);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    for epoch in 1..=config.epochs {
        for i in (1..order.len()).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
        let mut loss = 0.0f64;
        let w = model.weights_mut();
        for &e in &order {
            let (id, h, y) = examples[e];
            let x = &feats[id];
            let p = sigmoid(f64::from(logit(w, k, h, x))) as f32;
            loss -= f64::from(y) * f64::from(p.max(1e-7)).ln()
                + f64::from(1.0 - y) * f64::from((1.0 - p).max(1e-7)).ln();
            let g = p - y;
            for (r, v) in x {
                let at = *r as usize * k + h;
                let grad = g * v + config.l2 * w[at];
                g2[at] += grad * grad;
                w[at] -= config.learning_rate * grad / (g2[at].sqrt() + 1e-6);
            }
        }
        progress(Progress {
            epoch,
            epochs: config.epochs,
            loss: loss / examples.len() as f64,
        });
    }
    // The gains of every distinct training prompt: the prior's tables.
    let gains: Vec<f32> = feats
        .iter()
        .map(|x| {
            let w = &*model.weights_mut();
            let lo = sigmoid(f64::from(logit(w, k, 0, x)));
            let hi = sigmoid(f64::from(logit(w, k, k - 1, x)));
            super::model::score_of(lo, hi) as f32
        })
        .collect();
    let sorted = |v: &[f32]| {
        let mut v = v.to_vec();
        v.sort_by(f32::total_cmp);
        v
    };
    model.set_prior(
        config.length_weight,
        quantiles(&sorted(&lengths), PRIOR_QUANTILES),
        quantiles(&sorted(&gains), PRIOR_QUANTILES),
    );
    // The score sample for calibration: every distinct training prompt.
    let scores: Vec<f32> = lengths
        .iter()
        .zip(&gains)
        .map(|(l, g)| model.blend(*l as usize, f64::from(*g)) as f32)
        .collect();
    model.set_quantiles(quantiles(&sorted(&scores), 101));
    Ok(model)
}

/// `n` evenly spaced quantiles (linear interpolation) of sorted `v`.
fn quantiles(sorted: &[f32], n: usize) -> Vec<f32> {
    if sorted.is_empty() || n < 2 {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            let pos = i as f64 / (n - 1) as f64 * (sorted.len() - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(sorted.len() - 1);
            let t = (pos - lo as f64) as f32;
            sorted[lo] + (sorted[hi] - sorted[lo]) * t
        })
        .collect()
}

/// One online update of head `head` towards `score` with a plain SGD step
/// of at most `step` (the step is bounded, and so is each weight's change:
/// by `step` times the feature value).
pub(crate) fn online_update(
    model: &mut Model,
    featurizer: &Featurizer,
    prompt: &str,
    head: usize,
    score: f64,
    step: f32,
) {
    let k = model.tiers().len();
    if head >= k.min(MAX_TIERS) {
        return;
    }
    let x = sparse(featurizer, prompt);
    let w = model.weights_mut();
    let p = sigmoid(f64::from(logit(w, k, head, &x))) as f32;
    let g = (p - score as f32).clamp(-1.0, 1.0);
    for (r, v) in &x {
        if let Some(wi) = w.get_mut(*r as usize * k + head) {
            *wi -= step * g * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(prompt: &str, tier: &str, score: f64) -> Outcome {
        Outcome {
            prompt: prompt.into(),
            tier: tier.into(),
            model: String::new(),
            score,
            domain: None,
        }
    }

    #[test]
    fn bad_lines_name_the_problem() {
        let text = "{\"prompt\": \"a\", \"tier\": \"low\", \"score\": 1.0, \"domain\": \"x\"}\n{\"prompt\": \"b\", \"tier\": \"low\"}\n";
        let err = read_outcomes(text.as_bytes(), "f.jsonl").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.to_string()
                .starts_with("f.jsonl: line 2: missing field `score`"),
            "{err}"
        );
        let err = parse_outcome("{\"prompt\": \"a\", \"tier\": \"low\", \"score\": 2}", "f", 9).unwrap_err();
        assert_eq!(err.to_string(), "f: line 9: `score` must be in [0, 1], got 2");
        assert!(parse_outcome("", "f", 1).is_err());
        assert!(parse_outcome("not json", "f", 1).is_err());
    }

    #[test]
    fn training_is_deterministic_and_learns_a_signal() {
        // The cheap tier fails on "integral" prompts, the strong one does not.
        let mut data = Vec::new();
        for i in 0..200 {
            let hard = i % 2 == 0;
            let p = if hard {
                format!("compute the integral number {i} of the curve")
            } else {
                format!("say hello to friend number {i}")
            };
            data.push(o(&p, "low", if hard { 0.0 } else { 1.0 }));
            data.push(o(&p, "high", 1.0));
        }
        let cfg = TrainConfig {
            bits: 10,
            ..TrainConfig::default()
        };
        let mut epochs = Vec::new();
        let a = train(&data, &cfg, |p| epochs.push(p.epoch)).unwrap();
        let b = train(&data, &cfg, |_| {}).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(epochs, vec![1, 2, 3, 4]);
        assert_eq!(a.tiers(), ["low", "high"]);
        let hard = a.score("please compute the integral of the curve");
        let easy = a.score("say hello to my friend");
        assert!(hard > easy + 0.2, "hard {hard} easy {easy}");
    }

    #[test]
    fn the_length_prior_blends_length_and_gain_percentiles() {
        // Length says nothing here: the cheap tier fails on "integral"
        // prompts, short or long.
        let mut data = Vec::new();
        for i in 0..200 {
            let pad = "and so on ".repeat(i % 7);
            let p = if i % 2 == 0 {
                format!("integral {i} {pad}")
            } else {
                format!("hello {i} {pad}")
            };
            data.push(o(&p, "low", if i % 2 == 0 { 0.0 } else { 1.0 }));
            data.push(o(&p, "high", 1.0));
        }
        let with = |w: f32| {
            let cfg = TrainConfig {
                bits: 10,
                length_weight: w,
                ..TrainConfig::default()
            };
            train(&data, &cfg, |_| {}).unwrap()
        };
        let short = "hello there";
        let long = "hello there, a much longer greeting that goes on and on and on and on";
        // Weight 1: the score is the length percentile alone.
        let m = with(1.0);
        assert!(m.score(long) > m.score(short) + 0.5);
        assert_eq!(m.score(""), 0.0);
        assert_eq!(m.score(&"x".repeat(10_000)), 1.0);
        // Weight 0: the heads' gain alone, as without a prior.
        let m = with(0.0);
        assert_eq!(m.length_weight(), 0.0);
        let f = m.featurizer();
        assert_eq!(m.score(short), m.gain_with(&f, short));
        assert!(m.score("integral") > m.score(long));
        // Half and half: the mean of the two percentiles, so a short hard
        // prompt and a long easy one meet in the middle.
        let m = with(0.5);
        let mid = m.score("integral");
        assert!((0.0..=1.0).contains(&mid));
        assert!(m.score("integral") > m.score(short));
        assert!(m.score(long) > m.score(short));
        // Calibration samples the blended scores.
        assert!(m.quantiles().windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn a_length_weight_outside_the_unit_interval_is_an_error() {
        let data = vec![o("a", "low", 1.0), o("a", "high", 1.0)];
        for w in [-0.1, 1.5, f32::NAN] {
            let cfg = TrainConfig {
                length_weight: w,
                ..TrainConfig::default()
            };
            let err = train(&data, &cfg, |_| {}).unwrap_err();
            assert!(matches!(err, TrainError::LengthWeight(_)), "{err}");
            assert!(err.to_string().contains("length weight"), "{err}");
        }
    }

    #[test]
    fn unknown_tiers_are_errors() {
        let data = vec![o("a", "turbo", 1.0)];
        assert!(matches!(
            train(&data, &TrainConfig::default(), |_| {}),
            Err(TrainError::UnknownTier { .. })
        ));
        assert!(matches!(
            train(&[], &TrainConfig::default(), |_| {}),
            Err(TrainError::Empty)
        ));
        let one = vec![o("a", "low", 1.0)];
        assert!(matches!(
            train(&one, &TrainConfig::default(), |_| {}),
            Err(TrainError::Model(_))
        ));
    }
}
