//! RouteLLM's routing metric, and cross-validation.
//!
//! For a set of prompts each answered by a weak and a strong model,
//! [`evaluate`] sweeps a threshold on the router's scores over the 11 decile
//! edges of the scores (as `pandas.qcut(scores, 10)` bins them, linear
//! interpolation): a prompt goes to the strong model when its score is `>=`
//! the edge (`>` for the last edge, so the sweep ends at 0 % strong calls).
//! At each point the quality is the mean outcome of the routed model, and
//! `PGR = (quality − weak) / (strong − weak)`.
//!
//! * **APGR** is the area under PGR against the share of strong calls
//!   (trapezoids), over the range the sweep covers (normally 0 to 1).
//! * **CPT(x %)** is the share of strong calls at which the quality first
//!   reaches `weak + x · (strong − weak)`, interpolated linearly between
//!   sweep points taken in order of strong share (RouteLLM uses `np.interp`,
//!   which is the same where quality rises with the share).

use std::collections::{BTreeMap, HashMap};

use super::features::fnv1a;
use super::train::{Outcome, SplitMix, TrainConfig, TrainError, train};

/// Why a set of outcomes cannot be evaluated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// Nothing to evaluate.
    #[error("no prompt has both a `{weak}` and a `{strong}` outcome")]
    NoPairs {
        /// The weak tier.
        weak: String,
        /// The strong tier.
        strong: String,
    },
    /// Scores and outcomes differ in length.
    #[error("{scores} scores for {prompts} prompts")]
    Length {
        /// Scores given.
        scores: usize,
        /// Prompts given.
        prompts: usize,
    },
    /// A score is not a number.
    #[error("score {0} is not a finite number")]
    NotFinite(usize),
    /// The strong model is not better than the weak one on these prompts.
    #[error(
        "the strong model ({strong:.4}) is not better than the weak one ({weak:.4}) on these prompts: PGR is undefined"
    )]
    NoGap {
        /// Weak-only quality.
        weak: f64,
        /// Strong-only quality.
        strong: f64,
    },
    /// Training a fold failed.
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// One point of the threshold sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Share of calls sent to the strong model, in `[0, 1]`.
    pub strong_share: f64,
    /// Mean outcome of the routed models.
    pub quality: f64,
}

/// A router's figures on one set of prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterMetrics {
    /// Area under PGR vs strong share, normalised (random ≈ 0.5).
    pub apgr: f64,
    /// Share of strong calls that recovers 50 % of the gap.
    pub cpt50: f64,
    /// Share of strong calls that recovers 80 % of the gap.
    pub cpt80: f64,
    /// Quality with every call on the weak model.
    pub weak: f64,
    /// Quality with every call on the strong model.
    pub strong: f64,
    /// The sweep, by increasing strong share.
    pub curve: Vec<CurvePoint>,
}

/// The `q`-quantile (linear interpolation, as numpy's default) of sorted `v`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// RouteLLM's APGR and CPT for `scores` (higher = send to the strong
/// model) of prompts whose weak and strong outcomes are `weak` and `strong`.
pub fn evaluate(scores: &[f64], weak: &[f64], strong: &[f64]) -> Result<RouterMetrics, EvalError> {
    let n = scores.len();
    if weak.len() != n || strong.len() != n {
        return Err(EvalError::Length {
            scores: n,
            prompts: weak.len().min(strong.len()),
        });
    }
    if n == 0 {
        return Err(EvalError::NoPairs {
            weak: "weak".into(),
            strong: "strong".into(),
        });
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(EvalError::NotFinite(i));
    }
    let weak_q = weak.iter().sum::<f64>() / n as f64;
    let strong_q = strong.iter().sum::<f64>() / n as f64;
    if strong_q - weak_q <= 1e-12 {
        return Err(EvalError::NoGap {
            weak: weak_q,
            strong: strong_q,
        });
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut curve: Vec<CurvePoint> = (0..=10)
        .map(|i| {
            let t = quantile(&sorted, f64::from(i) / 10.0);
            let mut q = 0.0;
            let mut k = 0usize;
            for j in 0..n {
                let to_strong = if i < 10 { scores[j] >= t } else { scores[j] > t };
                if to_strong {
                    q += strong[j];
                    k += 1;
                } else {
                    q += weak[j];
                }
            }
            CurvePoint {
                strong_share: k as f64 / n as f64,
                quality: q / n as f64,
            }
        })
        .collect();
    curve.sort_by(|a, b| a.strong_share.total_cmp(&b.strong_share));
    let gap = strong_q - weak_q;
    let pgr = |p: &CurvePoint| (p.quality - weak_q) / gap;
    let mut area = 0.0;
    for w in curve.windows(2) {
        area += (w[1].strong_share - w[0].strong_share) * (pgr(&w[0]) + pgr(&w[1])) / 2.0;
    }
    let range = curve.last().map_or(0.0, |p| p.strong_share) - curve.first().map_or(0.0, |p| p.strong_share);
    let apgr = if range > 0.0 { area / range } else { 0.0 };
    let cpt = |x: f64| {
        let mut prev: Option<&CurvePoint> = None;
        for p in &curve {
            if pgr(p) >= x {
                return match prev {
                    Some(a) if pgr(p) > pgr(a) => {
                        let t = (x - pgr(a)) / (pgr(p) - pgr(a));
                        a.strong_share + t * (p.strong_share - a.strong_share)
                    }
                    _ => p.strong_share,
                };
            }
            prev = Some(p);
        }
        1.0
    };
    Ok(RouterMetrics {
        apgr,
        cpt50: cpt(0.5),
        cpt80: cpt(0.8),
        weak: weak_q,
        strong: strong_q,
        curve,
    })
}

/// Prompts with both a weak and a strong outcome (several outcomes of one
/// tier are averaged), in first-seen order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paired {
    /// The prompts.
    pub prompts: Vec<String>,
    /// Their groups (`domain`), if any.
    pub groups: Vec<Option<String>>,
    /// Weak outcomes.
    pub weak: Vec<f64>,
    /// Strong outcomes.
    pub strong: Vec<f64>,
    /// Outcomes of prompts that lack the other tier (index into the input).
    pub unpaired: Vec<usize>,
}

/// Pairs outcomes by prompt text.
pub fn pair(outcomes: &[Outcome], weak: &str, strong: &str) -> Paired {
    #[derive(Default)]
    struct Acc {
        w: (f64, u32),
        s: (f64, u32),
        group: Option<String>,
        lines: Vec<usize>,
    }
    let mut order: Vec<&str> = Vec::new();
    let mut by: HashMap<&str, Acc> = HashMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        let acc = by.entry(o.prompt.as_str()).or_insert_with(|| {
            order.push(o.prompt.as_str());
            Acc::default()
        });
        acc.lines.push(i);
        if acc.group.is_none() {
            acc.group.clone_from(&o.domain);
        }
        if o.tier == weak {
            acc.w.0 += o.score;
            acc.w.1 += 1;
        } else if o.tier == strong {
            acc.s.0 += o.score;
            acc.s.1 += 1;
        }
    }
    let mut out = Paired::default();
    for p in order {
        let Some(acc) = by.remove(p) else { continue };
        if acc.w.1 == 0 || acc.s.1 == 0 {
            out.unpaired.extend(acc.lines);
            continue;
        }
        out.prompts.push(p.to_owned());
        out.groups.push(acc.group);
        out.weak.push(acc.w.0 / f64::from(acc.w.1));
        out.strong.push(acc.s.0 / f64::from(acc.s.1));
    }
    out
}

/// The scores of the two baselines on `prompts`: a random router (seeded)
/// and prompt length in bytes.
pub fn baselines(prompts: &[String], seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = SplitMix(seed);
    let random = prompts.iter().map(|_| (rng.next_u64() >> 11) as f64).collect();
    let length = prompts.iter().map(|p| p.len() as f64).collect();
    (random, length)
}

/// How cross-validation folds are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// By `domain` for lines that have one, by prompt for the others.
    Auto,
    /// Whole domains are held out together (lines without one form one group).
    Domain,
    /// Prompts are held out (both outcomes of a prompt stay together).
    Prompt,
}

/// The figures of one data set in one fold of [`cross_validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SourceResult {
    /// Prompts of the data set held out in this fold.
    pub prompts: usize,
    /// The learned triage trained on the other folds (of every data set).
    pub learned: RouterMetrics,
    /// Prompt length alone.
    pub length: RouterMetrics,
    /// A random router.
    pub random: RouterMetrics,
}

/// One fold of [`cross_validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct FoldResult {
    /// Groups held out (domains, or prompts).
    pub groups: usize,
    /// Per data set (in the order of `sources`), `None` when the fold
    /// holds no prompt of it.
    pub sources: Vec<Option<SourceResult>>,
}

/// K-fold cross-validation over groups: each fold is trained on the other
/// folds of every data set and evaluated, per data set, on its held-out
/// prompts. `source[i]` is the data set (0-based, below `sources`) of
/// `outcomes[i]`. Groups go to folds by a fixed hash of their name, so the
/// folds do not depend on the order of lines.
pub fn cross_validate(
    outcomes: &[Outcome],
    source: &[usize],
    sources: usize,
    folds: usize,
    group_by: GroupBy,
    config: &TrainConfig,
    mut on_fold: impl FnMut(usize, &FoldResult),
) -> Result<Vec<FoldResult>, EvalError> {
    let folds = folds.max(2);
    let group_of = |o: &Outcome| -> String {
        match (group_by, &o.domain) {
            (GroupBy::Prompt, _) | (GroupBy::Auto, None) => format!("p:{}", o.prompt),
            (_, Some(d)) => format!("d:{d}"),
            (GroupBy::Domain, None) => "d:".to_owned(),
        }
    };
    // Distinct groups, sorted by hash, dealt round-robin: balanced folds.
    let mut groups: BTreeMap<(u64, String), ()> = BTreeMap::new();
    for o in outcomes {
        let g = group_of(o);
        groups.insert((fnv1a(g.as_bytes()) ^ config.seed, g), ());
    }
    let fold_of: HashMap<String, usize> = groups
        .into_keys()
        .enumerate()
        .map(|(i, (_, g))| (g, i % folds))
        .collect();
    let tiers = match &config.tiers {
        Some(t) => t.clone(),
        None => super::train::infer_tiers(outcomes)?,
    };
    let (Some(weak), Some(strong)) = (tiers.first(), tiers.last()) else {
        return Err(EvalError::NoPairs {
            weak: String::new(),
            strong: String::new(),
        });
    };
    let mut results = Vec::with_capacity(folds);
    for fold in 0..folds {
        let held: Vec<bool> = outcomes
            .iter()
            .map(|o| fold_of.get(&group_of(o)) == Some(&fold))
            .collect();
        let rest: Vec<Outcome> = outcomes
            .iter()
            .zip(&held)
            .filter(|(_, h)| !**h)
            .map(|(o, _)| o.clone())
            .collect();
        let model = train(
            &rest,
            &TrainConfig {
                tiers: Some(tiers.clone()),
                ..config.clone()
            },
            |_| {},
        )?;
        let mut per_source = Vec::with_capacity(sources);
        for src in 0..sources {
            let test: Vec<Outcome> = outcomes
                .iter()
                .zip(&held)
                .zip(source)
                .filter(|((_, h), s)| **h && **s == src)
                .map(|((o, _), _)| o.clone())
                .collect();
            let paired = pair(&test, weak, strong);
            if paired.prompts.is_empty() {
                per_source.push(None);
                continue;
            }
            let scores: Vec<f64> = paired.prompts.iter().map(|p| model.score(p)).collect();
            let (random, length) = baselines(&paired.prompts, config.seed.wrapping_add(fold as u64));
            per_source.push(Some(SourceResult {
                prompts: paired.prompts.len(),
                learned: evaluate(&scores, &paired.weak, &paired.strong)?,
                length: evaluate(&length, &paired.weak, &paired.strong)?,
                random: evaluate(&random, &paired.weak, &paired.strong)?,
            }));
        }
        let r = FoldResult {
            groups: fold_of.values().filter(|f| **f == fold).count(),
            sources: per_source,
        };
        on_fold(fold, &r);
        results.push(r);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apgr_of_a_hand_computed_case() {
        // Ten prompts; the weak model fails on prompts 0..4, the strong one
        // succeeds everywhere: weak = 0.6, strong = 1.0.
        let weak = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let strong = [1.0; 10];
        // A perfect router: the four hard prompts score highest.
        let perfect = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0];
        let m = evaluate(&perfect, &weak, &strong).unwrap();
        // Deciles of 10 distinct scores put 100 %, 90 %, …, 10 %, 0 % of calls
        // on the strong model; PGR = min(1, share / 0.4).
        // Area: 0 → 0.4 is a ramp (0.2), 0.4 → 1.0 is flat at 1 (0.6).
        assert!((m.apgr - 0.8).abs() < 1e-9, "{}", m.apgr);
        assert_eq!(m.curve.len(), 11);
        assert!((m.cpt50 - 0.2).abs() < 1e-9, "{}", m.cpt50);
        assert!((m.cpt80 - 0.32).abs() < 1e-9, "{}", m.cpt80);
        assert_eq!((m.weak, m.strong), (0.6, 1.0));
        // The reverse router recovers the gap only at the end: area 0.2.
        let reverse: Vec<f64> = perfect.iter().map(|s| 1.0 - s).collect();
        let r = evaluate(&reverse, &weak, &strong).unwrap();
        assert!((r.apgr - 0.2).abs() < 1e-9, "{}", r.apgr);
        assert!((r.cpt50 - 0.8).abs() < 1e-9, "{}", r.cpt50);
        // A constant router jumps from 0 % to 100 %: area 0.5.
        let flat = evaluate(&[0.5; 10], &weak, &strong).unwrap();
        assert!((flat.apgr - 0.5).abs() < 1e-9, "{}", flat.apgr);
    }

    #[test]
    fn undefined_cases_are_errors() {
        assert!(matches!(
            evaluate(&[0.1], &[1.0], &[1.0]),
            Err(EvalError::NoGap { .. })
        ));
        assert!(matches!(
            evaluate(&[0.1, 0.2], &[1.0], &[1.0]),
            Err(EvalError::Length { .. })
        ));
        assert!(matches!(
            evaluate(&[f64::NAN], &[0.0], &[1.0]),
            Err(EvalError::NotFinite(0))
        ));
    }

    #[test]
    fn pairs_by_prompt_text() {
        let o = |p: &str, t: &str, s: f64| Outcome {
            prompt: p.into(),
            tier: t.into(),
            model: String::new(),
            score: s,
            domain: None,
        };
        let data = [
            o("a", "low", 0.0),
            o("b", "high", 1.0),
            o("a", "high", 1.0),
            o("c", "low", 1.0),
        ];
        let p = pair(&data, "low", "high");
        assert_eq!(p.prompts, ["a"]);
        assert_eq!((p.weak[0], p.strong[0]), (0.0, 1.0));
        assert_eq!(p.unpaired, [1, 3]);
    }
}
