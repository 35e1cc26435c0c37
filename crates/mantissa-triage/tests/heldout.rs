//! The built-in learned triage on prompts and subjects it was never trained
//! on: a sample of RouteLLM's public evaluation data that `shared/routing/`
//! leaves out (see `heldout/SOURCE.md`). Guards the README's quality figures:
//! a retrained or re-featurised model that falls below prompt length alone,
//! or below the targets (0.62 GSM8K, 0.60 MMLU, 0.65 chat), fails here.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use mantissa_triage::learned::eval::{baselines, evaluate, pair};
use mantissa_triage::learned::{builtin_model, train::read_outcomes};

struct Measured {
    prompts: usize,
    learned: f64,
    length: f64,
}

fn measure(file: &str) -> Measured {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/heldout")
        .join(file);
    let outcomes = read_outcomes(BufReader::new(File::open(&path).unwrap()), file).unwrap();
    let paired = pair(&outcomes, "low", "high");
    assert!(paired.unpaired.is_empty(), "{file}: unpaired lines");
    let model = builtin_model().unwrap();
    let scores: Vec<f64> = paired.prompts.iter().map(|p| model.score(p)).collect();
    let (_, length) = baselines(&paired.prompts, 7);
    Measured {
        prompts: paired.prompts.len(),
        learned: evaluate(&scores, &paired.weak, &paired.strong).unwrap().apgr,
        length: evaluate(&length, &paired.weak, &paired.strong).unwrap().apgr,
    }
}

/// Measures `file` (expecting `prompts` prompts) and asserts the built-in
/// model is at least prompt length alone and at least `target`.
fn check(file: &str, prompts: usize, target: f64) {
    let m = measure(file);
    assert_eq!(m.prompts, prompts, "{file}");
    assert!(
        m.learned >= m.length,
        "{file}: learned {:.3} < length {:.3}",
        m.learned,
        m.length
    );
    assert!(m.learned >= target, "{file}: learned {:.3} < {target}", m.learned);
}

#[test]
fn held_out_gsm8k_beats_length_and_the_target() {
    check("gsm8k_heldout.jsonl", 661, 0.62);
}

#[test]
fn held_out_mmlu_subjects_beat_length_and_the_target() {
    check("mmlu_heldout_sample.jsonl", 788, 0.60);
}

#[test]
fn open_ended_chat_beats_length_and_the_target() {
    // MT-Bench's first turns, the 72 questions RouteLLM keeps after
    // decontamination; the domain head's task-kind prior carries this one.
    check("mtbench.jsonl", 72, 0.65);
}
