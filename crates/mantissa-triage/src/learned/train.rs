//! Outcome records and training.
//!
//! An [`Outcome`] is one observed call: the prompt (latest user turn), the
//! tier that served it, the model, and a score in `[0, 1]` (1 = the answer
//! was good). Files of outcomes are JSON lines, the format of
//! `shared/routing/README.md` and of [`FeedbackLog`](super::FeedbackLog).
//!
//! [`train`] fits one logistic head per tier on the outcomes of that tier
//! only (bandit feedback: a line says how the tier that served it did, and
//! nothing about the others): full-batch accelerated gradient descent on
//! the L2-regularised logistic loss, each domain weighing the same
//! ([`TrainConfig::balance_domains`]). The domain head is fitted the same
//! way to each prompt's *domain's* failure rate of the cheapest tier (see
//! [`Model`]'s task-kind prior). The same outcomes and settings give the
//! same model bytes.

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
    /// Hash bits (`2^bits` buckets). Defaults to 17 (about 1.5 MB for two tiers and the domain head).
    pub bits: u8,
    /// Passes over the data: each is one full-batch gradient step of every
    /// head. Defaults to 400 (converged on `shared/routing/`).
    pub epochs: u32,
    /// L2 penalty on the hashed n-gram weights (the mean loss plus
    /// `l2 / 2 · |w|²`; the dense weights get [`DENSE_PENALTY`] times it,
    /// the bias none). Defaults to 0.002.
    pub l2: f32,
    /// Seed of cross-validation's fold assignment and random baseline.
    /// Training itself draws nothing at random: the same outcomes give the
    /// same model bytes. Defaults to 42.
    pub seed: u64,
    /// Tier names, cheapest first. `None` infers them: the names among
    /// `low`, `medium`, `high` in that order.
    pub tiers: Option<Vec<String>>,
    /// Weight of the length prior in the score, in `[0, 1]` (0 = the heads'
    /// gain alone; see [`Model`]'s docs). Defaults to 0.35.
    pub length_weight: f32,
    /// Weigh every `domain` equally (outcomes without one form one group)
    /// rather than every line, so the model learns what transfers across
    /// subjects rather than what the largest one looks like. Defaults to
    /// `true`; data without domains trains the same either way.
    pub balance_domains: bool,
    /// Weight of the task-kind prior in the score, in `[0, 1]` with
    /// `length_weight + domain_weight ≤ 1` (see [`Model`]'s docs). It needs
    /// outcomes of the cheapest tier in at least two domains (outcomes
    /// without a domain form one); with fewer the model's domain weight is
    /// 0. Defaults to 0.3.
    pub domain_weight: f32,
    /// L2 penalty of the domain head (as [`l2`](Self::l2) for the tier
    /// heads). Much smaller by default (0.00007): the domain head fits one
    /// rate per domain, not noisy single outcomes, and should tell the
    /// domains apart sharply, so that prompts of one kind of task get about
    /// the same value and the prior does not reorder them.
    pub domain_l2: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            bits: 17,
            epochs: 400,
            l2: 0.002,
            seed: 42,
            tiers: None,
            length_weight: 0.35,
            balance_domains: true,
            domain_weight: 0.3,
            domain_l2: 0.000_07,
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
    /// The domain weight is not a number in `[0, 1]`, or it and the length
    /// weight add up to more than 1.
    #[error(
        "the domain weight must be in [0, 1] and at most 1 minus the length weight ({length}), got {domain}"
    )]
    DomainWeight {
        /// The domain weight.
        domain: f32,
        /// The length weight.
        length: f32,
    },
    /// The L2 penalty is negative or not a number.
    #[error("the L2 penalty must be a finite number >= 0, got {0}")]
    L2(f32),
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

/// SplitMix64: a tiny, fixed generator so the folds and baselines are the
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

/// The logit of head `h` for sparse features `x` (`cols` heads per
/// feature row).
pub(crate) fn logit(w: &[f32], cols: usize, h: usize, x: &[(u32, f32)]) -> f32 {
    x.iter()
        .map(|(r, v)| w.get(*r as usize * cols + h).copied().unwrap_or(0.0) * v)
        .sum()
}

/// Trains a model on `outcomes`; `progress` is called every twentieth of
/// the epochs (every epoch for fewer than 40) and after the last.
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
    if !((0.0..=1.0).contains(&config.domain_weight)
        && config.length_weight + config.domain_weight <= 1.0 + 1e-6)
    {
        return Err(TrainError::DomainWeight {
            domain: config.domain_weight,
            length: config.length_weight,
        });
    }
    for l2 in [config.l2, config.domain_l2] {
        if !(l2.is_finite() && l2 >= 0.0) {
            return Err(TrainError::L2(l2));
        }
    }
    let tiers = match &config.tiers {
        Some(t) => t.clone(),
        None => infer_tiers(outcomes)?,
    };
    let mut model = Model::zeros(tiers.clone(), config.bits)?;
    let f = model.featurizer();
    let k = tiers.len();
    let cols = model.cols();
    // Features once per distinct prompt.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut feats: Vec<Vec<(u32, f32)>> = Vec::new();
    let mut lengths: Vec<f32> = Vec::new();
    let mut domains: Vec<Option<&str>> = Vec::new();
    let weights = example_weights(outcomes, config.balance_domains);
    let mut heads: Vec<Head> = (0..k).map(|_| Head::default()).collect();
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
            domains.push(o.domain.as_deref());
            feats.len() - 1
        });
        heads[head]
            .examples
            .push((id, o.score, f64::from(weights[index])));
    }
    let (domain_head, domain_weight) =
        match domain_head(outcomes, &tiers[0], &domains, config.balance_domains) {
            Some(head) => (head, config.domain_weight),
            None => (Head::default(), 0.0),
        };
    heads.push(domain_head);
    let dims = DENSE + (1usize << config.bits);
    let l2 = f64::from(config.l2);
    let domain_l2 = f64::from(config.domain_l2);
    let mut fits: Vec<Fit> = heads
        .iter()
        .enumerate()
        .map(|(i, h)| Fit::new(h, dims, &feats, if i < k { l2 } else { domain_l2 }))
        .collect();
    let every = (config.epochs / 20).max(1);
    for epoch in 1..=config.epochs {
        let mut loss = 0.0;
        for (fit, head) in fits.iter_mut().zip(&heads).take(k) {
            loss += fit.step(head, &feats, l2) * head.examples.len() as f64;
        }
        if let (Some(fit), Some(head)) = (fits.get_mut(k), heads.get(k)) {
            fit.step(head, &feats, domain_l2);
        }
        if epoch % every == 0 || epoch == config.epochs {
            progress(Progress {
                epoch,
                epochs: config.epochs,
                loss: loss / outcomes.len() as f64,
            });
        }
    }
    {
        let w = model.weights_mut();
        for (h, fit) in fits.iter().enumerate() {
            for (j, t) in fit.theta.iter().enumerate() {
                w[j * cols + h] = *t as f32;
            }
        }
    }
    // The gains and domain-head failure probabilities of every distinct
    // training prompt: the prior's tables.
    let (gains, kinds): (Vec<f32>, Vec<f32>) = feats
        .iter()
        .map(|x| {
            let w = &*model.weights_mut();
            let lo = sigmoid(f64::from(logit(w, cols, 0, x)));
            let hi = sigmoid(f64::from(logit(w, cols, k - 1, x)));
            let kind = sigmoid(f64::from(logit(w, cols, k, x)));
            (super::model::score_of(lo, hi) as f32, kind as f32)
        })
        .unzip();
    let sorted = |v: &[f32]| {
        let mut v = v.to_vec();
        v.sort_by(f32::total_cmp);
        v
    };
    model.set_prior(
        (config.length_weight, domain_weight),
        [
            quantiles(&sorted(&lengths), PRIOR_QUANTILES),
            quantiles(&sorted(&gains), PRIOR_QUANTILES),
            quantiles(&sorted(&kinds), PRIOR_QUANTILES),
        ],
    );
    // The score sample for calibration: every distinct training prompt.
    let scores: Vec<f32> = lengths
        .iter()
        .zip(gains.iter().zip(&kinds))
        .map(|(l, (g, d))| model.blend(*l as usize, f64::from(*g), f64::from(*d)) as f32)
        .collect();
    model.set_quantiles(quantiles(&sorted(&scores), 101));
    Ok(model)
}

/// How much harder than the n-grams the dense features are penalised.
///
/// Freely weighted, the dense features (digits, operators, lines, the rule
/// signals, length) learn which *benchmark* a prompt comes from rather than
/// how hard it is, and do not transfer: on held-out subjects they cost
/// 0.03–0.05 APGR. Length enters through the prior instead (see [`Model`]).
pub const DENSE_PENALTY: f64 = 100.0;

/// The outcomes of one tier: `(prompt id, score, weight)`.
#[derive(Debug, Default)]
struct Head {
    examples: Vec<(usize, f64, f64)>,
}

/// Full-batch accelerated gradient descent (Nesterov, with the gradient
/// restart of O'Donoghue and Candès) on one head's L2-regularised, weighted
/// logistic loss. The bias (dense feature 0) is not penalised; the step is
/// `1 / L` with `L` the loss's smoothness bound, so no learning rate is
/// needed and nothing is drawn at random.
#[derive(Debug)]
struct Fit {
    theta: Vec<f64>,
    /// The extrapolated point the gradient is taken at.
    y: Vec<f64>,
    grad: Vec<f64>,
    t: f64,
    step: f64,
}

impl Fit {
    fn new(head: &Head, dims: usize, feats: &[Vec<(u32, f32)>], l2: f64) -> Self {
        let mut theta = vec![0.0; dims];
        // Start at the base rate.
        let (sum, n) = head
            .examples
            .iter()
            .fold((0.0, 0.0), |(s, n), e| (s + e.1 * e.2, n + e.2));
        if n > 0.0 {
            let p = ((sum + 0.5) / (n + 1.0)).clamp(1e-3, 1.0 - 1e-3);
            theta[0] = (p / (1.0 - p)).ln();
        }
        // The logistic loss's curvature is at most |x|^2 / 4.
        let max_sq = head
            .examples
            .iter()
            .map(|e| feats[e.0].iter().map(|(_, v)| f64::from(*v).powi(2)).sum::<f64>())
            .fold(0.0, f64::max);
        Self {
            y: theta.clone(),
            theta,
            grad: vec![0.0; dims],
            t: 1.0,
            step: 1.0 / (max_sq / 4.0 + l2 * DENSE_PENALTY).max(1e-3),
        }
    }

    /// One iteration; returns the weighted mean loss at the point the
    /// gradient was taken.
    fn step(&mut self, head: &Head, feats: &[Vec<(u32, f32)>], l2: f64) -> f64 {
        if head.examples.is_empty() {
            return 0.0;
        }
        self.grad.iter_mut().for_each(|g| *g = 0.0);
        let total: f64 = head.examples.iter().map(|e| e.2).sum();
        let mut loss = 0.0;
        for &(id, target, weight) in &head.examples {
            let x = &feats[id];
            let z: f64 = x.iter().map(|(r, v)| self.y[*r as usize] * f64::from(*v)).sum();
            let p = sigmoid(z);
            loss -= weight * (target * p.max(1e-12).ln() + (1.0 - target) * (1.0 - p).max(1e-12).ln());
            let g = (p - target) * weight / total;
            for (r, v) in x {
                self.grad[*r as usize] += g * f64::from(*v);
            }
        }
        for (j, (g, y)) in self.grad.iter_mut().zip(&self.y).enumerate().skip(1) {
            *g += if j < DENSE { l2 * DENSE_PENALTY * y } else { l2 * y };
        }
        // theta_next = y - step * grad; restart the momentum when the step
        // goes against the gradient. The three buffers rotate rather than
        // allocate: y's becomes theta_next, the gradient's the new y, and the
        // old theta's the next gradient (zeroed at the start of a step).
        let mut dot = 0.0;
        let mut next = std::mem::take(&mut self.y);
        for ((n, g), th) in next.iter_mut().zip(&self.grad).zip(&self.theta) {
            *n -= self.step * g;
            dot += g * (*n - th);
        }
        if dot > 0.0 {
            self.t = 1.0;
        }
        let t_next = (1.0 + (1.0 + 4.0 * self.t * self.t).sqrt()) / 2.0;
        let momentum = (self.t - 1.0) / t_next;
        let mut y = std::mem::take(&mut self.grad);
        for ((yv, n), th) in y.iter_mut().zip(&next).zip(&self.theta) {
            *yv = n + momentum * (n - th);
        }
        self.grad = std::mem::replace(&mut self.theta, next);
        self.y = y;
        self.t = t_next;
        loss / total
    }
}

/// The domain head's examples: every distinct prompt (by id, its domain in
/// `domains`) whose domain has outcomes of the `cheapest` tier, with that
/// domain's failure rate of the cheapest tier as the target; with
/// `balance`, every domain weighs the same. `None` with fewer than two such
/// domains: there is no kind of task to tell apart.
fn domain_head(
    outcomes: &[Outcome],
    cheapest: &str,
    domains: &[Option<&str>],
    balance: bool,
) -> Option<Head> {
    let mut rate: HashMap<Option<&str>, (f64, f64)> = HashMap::new();
    for o in outcomes.iter().filter(|o| o.tier == cheapest) {
        let e = rate.entry(o.domain.as_deref()).or_default();
        e.0 += o.score;
        e.1 += 1.0;
    }
    if rate.len() < 2 {
        return None;
    }
    let (ids, kept): (Vec<usize>, Vec<Option<&str>>) = domains
        .iter()
        .enumerate()
        .filter(|(_, d)| rate.contains_key(*d))
        .map(|(id, d)| (id, *d))
        .unzip();
    let weights = balanced_weights(&kept, balance);
    let examples = ids
        .into_iter()
        .zip(&kept)
        .zip(weights)
        .map(|((id, d), weight)| {
            let (sum, lines) = rate[d];
            (id, 1.0 - sum / lines, weight)
        })
        .collect();
    Some(Head { examples })
}

/// Each outcome's weight in the loss (mean 1): with `balance`, every
/// domain (outcomes without one form one group) weighs the same in total,
/// so no subject with many lines dominates what is learned; else all 1.
fn example_weights(outcomes: &[Outcome], balance: bool) -> Vec<f32> {
    let groups: Vec<Option<&str>> = outcomes.iter().map(|o| o.domain.as_deref()).collect();
    balanced_weights(&groups, balance)
        .into_iter()
        .map(|w| w as f32)
        .collect()
}

/// One weight per element of `groups` (mean 1): with `balance`, every
/// group weighs the same in total; else all 1.
fn balanced_weights(groups: &[Option<&str>], balance: bool) -> Vec<f64> {
    if !balance {
        return vec![1.0; groups.len()];
    }
    let mut count: HashMap<Option<&str>, usize> = HashMap::new();
    for g in groups {
        *count.entry(*g).or_default() += 1;
    }
    let (n, k) = (groups.len() as f64, count.len() as f64);
    groups.iter().map(|g| n / (k * count[g] as f64)).collect()
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
    let cols = model.cols();
    let x = sparse(featurizer, prompt);
    let w = model.weights_mut();
    let p = sigmoid(f64::from(logit(w, cols, head, &x))) as f32;
    let g = (p - score as f32).clamp(-1.0, 1.0);
    for (r, v) in &x {
        if let Some(wi) = w.get_mut(*r as usize * cols + head) {
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
        // Progress every twentieth of the run, ending with the last pass.
        assert_eq!(epochs.len(), 20);
        assert_eq!(epochs.last(), Some(&cfg.epochs));
        assert_eq!(a.tiers(), ["low", "high"]);
        let hard = a.score("please compute the integral of the curve");
        let easy = a.score("say hello to my friend");
        assert!(hard > easy + 0.15, "hard {hard} easy {easy}");
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
                domain_weight: 0.0,
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
    fn the_domain_head_learns_which_kind_of_task_the_cheap_tier_fails() {
        // Two domains: the cheap tier fails 70 % of the maths questions and
        // 10 % of the chat ones, but which question fails is arbitrary, so
        // the tier heads learn little and the domain head learns the kind.
        let mut data = Vec::new();
        for i in 0..300 {
            let (p, domain, fails) = if i % 2 == 0 {
                (
                    format!("solve the equation for x number {i}"),
                    "maths",
                    i % 10 < 7,
                )
            } else {
                (
                    format!("write a friendly note to pal number {i}"),
                    "chat",
                    i % 10 == 1,
                )
            };
            for (tier, score) in [("low", if fails { 0.0 } else { 1.0 }), ("high", 1.0)] {
                data.push(Outcome {
                    domain: Some(domain.into()),
                    ..o(&p, tier, score)
                });
            }
        }
        let cfg = TrainConfig {
            bits: 10,
            length_weight: 0.0,
            domain_weight: 1.0,
            ..TrainConfig::default()
        };
        let m = train(&data, &cfg, |_| {}).unwrap();
        assert_eq!(m.domain_weight(), 1.0);
        let f = m.featurizer();
        let (_, maths) = m.gain_and_kind(&f, "solve this equation for y");
        let (_, chat) = m.gain_and_kind(&f, "write a note to my pal");
        assert!(maths > 0.55 && chat < 0.35, "maths {maths} chat {chat}");
        let (hard, easy) = (
            m.score("solve the equation for x number 12"),
            m.score("write a friendly note to pal number 13"),
        );
        assert!(hard > easy + 0.3, "hard {hard} easy {easy}");
        // Saved and read back, the prior scores the same.
        let back = Model::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back.score("solve for z"), m.score("solve for z"));
        // One domain (or none): no kind to tell apart, the prior is off.
        let one: Vec<Outcome> = data
            .iter()
            .map(|x| Outcome {
                domain: None,
                ..x.clone()
            })
            .collect();
        let m = train(&one, &cfg, |_| {}).unwrap();
        assert_eq!(m.domain_weight(), 0.0);
        assert_eq!(
            m.score("solve for z"),
            m.gain_with(&m.featurizer(), "solve for z")
        );
    }

    #[test]
    fn a_bad_length_weight_or_l2_is_an_error() {
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
        for l2 in [-1.0, f32::INFINITY, f32::NAN] {
            let cfg = TrainConfig {
                l2,
                ..TrainConfig::default()
            };
            let err = train(&data, &cfg, |_| {}).unwrap_err();
            assert!(matches!(err, TrainError::L2(_)), "{err}");
            let cfg = TrainConfig {
                domain_l2: l2,
                ..TrainConfig::default()
            };
            let err = train(&data, &cfg, |_| {}).unwrap_err();
            assert!(matches!(err, TrainError::L2(_)), "{err}");
        }
        for (length_weight, domain_weight) in [(0.8, 0.3), (0.0, -0.1), (0.0, 1.5), (0.2, f32::NAN)] {
            let cfg = TrainConfig {
                length_weight,
                domain_weight,
                ..TrainConfig::default()
            };
            let err = train(&data, &cfg, |_| {}).unwrap_err();
            assert!(matches!(err, TrainError::DomainWeight { .. }), "{err}");
            assert!(err.to_string().contains("domain weight"), "{err}");
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
