//! Calibration: boundaries that send target shares of traffic to each tier.
//!
//! Like RouteLLM's threshold calibration, the cut points are quantiles of a
//! sample of recorded scores (for example the `mantissa_triage_score`
//! observations of a day, or scores of a replayed log): to send 20 % of
//! traffic to the top tier, the top cut is the 80th percentile.
//!
//! ```
//! use mantissa_triage::calibrate;
//!
//! // Scores recorded by a triage strategy (here: uniform in [0, 1)).
//! let scores: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
//! // 50 % low, 30 % medium, 20 % high.
//! let b = calibrate(&scores, &[0.5, 0.3, 0.2]).unwrap();
//! assert!((b.cuts()[0] - 0.5).abs() < 0.01);
//! assert!((b.cuts()[1] - 0.8).abs() < 0.01);
//! ```

use mantissa_core::ConfigError;

use crate::decision::Boundaries;

/// Computes boundaries from a score sample and target shares per tier
/// (cheapest first, summing to 1).
///
/// Each cut is placed midway between the two sample scores that straddle
/// the cumulative share, so on the sample itself the shares are met exactly
/// up to ties. A tier with a share of 0 at the top gets a cut above every
/// sample score.
pub fn calibrate(scores: &[f64], shares: &[f64]) -> Result<Boundaries, ConfigError> {
    if shares.is_empty() {
        return Err(ConfigError::new("shares", "at least one tier share is required"));
    }
    for (i, s) in shares.iter().enumerate() {
        if !s.is_finite() || *s < 0.0 || *s > 1.0 {
            return Err(ConfigError::new(
                format!("shares[{i}]"),
                format!("must be in [0, 1], got {s}"),
            ));
        }
    }
    let total: f64 = shares.iter().sum();
    if (total - 1.0).abs() > 1e-6 {
        return Err(ConfigError::new("shares", format!("must sum to 1, got {total}")));
    }
    if scores.is_empty() {
        return Err(ConfigError::new("scores", "the sample is empty"));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(ConfigError::new(
            format!("scores[{i}]"),
            "must be a finite number",
        ));
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mut cumulative = 0.0;
    let mut cuts = Vec::with_capacity(shares.len() - 1);
    for share in &shares[..shares.len() - 1] {
        cumulative += share;
        let k = ((cumulative * n as f64).round() as usize).min(n);
        let cut = if k == 0 {
            sorted[0]
        } else if k == n {
            // Nothing above: a cut no sample score reaches.
            sorted[n - 1] + 1.0
        } else {
            (sorted[k - 1] + sorted[k]) / 2.0
        };
        cuts.push(cut);
    }
    Boundaries::new(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn shares_of(b: &Boundaries, scores: &[f64], tiers: usize) -> Vec<f64> {
        let mut counts = vec![0usize; tiers];
        for s in scores {
            counts[b.rank(*s)] += 1;
        }
        counts.iter().map(|c| *c as f64 / scores.len() as f64).collect()
    }

    #[test]
    fn hits_target_shares_within_two_points_on_10k_scores() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // A skewed, bimodal score distribution, like real traffic: mostly easy.
        let sample: Vec<f64> = (0..10_000)
            .map(|_| {
                let x: f64 = rng.random();
                if rng.random_bool(0.7) {
                    x * x * 0.4
                } else {
                    0.4 + 0.6 * x.sqrt()
                }
            })
            .collect();
        for target in [
            [0.5, 0.3, 0.2],
            [0.6, 0.2, 0.2],
            [0.1, 0.1, 0.8],
            [0.34, 0.33, 0.33],
        ] {
            let b = calibrate(&sample, &target).unwrap();
            let got = shares_of(&b, &sample, 3);
            for (g, t) in got.iter().zip(target) {
                assert!((g - t).abs() <= 0.02, "target {target:?} got {got:?}");
            }
            // And on a fresh sample of the same distribution.
            let fresh: Vec<f64> = (0..10_000)
                .map(|_| {
                    let x: f64 = rng.random();
                    if rng.random_bool(0.7) {
                        x * x * 0.4
                    } else {
                        0.4 + 0.6 * x.sqrt()
                    }
                })
                .collect();
            let got = shares_of(&b, &fresh, 3);
            for (g, t) in got.iter().zip(target) {
                assert!((g - t).abs() <= 0.02, "fresh: target {target:?} got {got:?}");
            }
        }
    }

    #[test]
    fn edge_shares() {
        let sample: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let b = calibrate(&sample, &[1.0, 0.0]).unwrap();
        assert_eq!(shares_of(&b, &sample, 2), vec![1.0, 0.0]);
        let b = calibrate(&sample, &[0.0, 1.0]).unwrap();
        assert_eq!(shares_of(&b, &sample, 2), vec![0.0, 1.0]);
        assert_eq!(calibrate(&sample, &[1.0]).unwrap().cuts().len(), 0);
    }

    #[test]
    fn invalid_inputs_name_the_field() {
        assert_eq!(calibrate(&[0.1], &[0.5, 0.4]).unwrap_err().field, "shares");
        assert_eq!(calibrate(&[0.1], &[1.5, -0.5]).unwrap_err().field, "shares[0]");
        assert_eq!(calibrate(&[], &[1.0]).unwrap_err().field, "scores");
        assert_eq!(
            calibrate(&[0.1, f64::NAN], &[1.0]).unwrap_err().field,
            "scores[1]"
        );
        assert_eq!(calibrate(&[0.1], &[]).unwrap_err().field, "shares");
    }
}
