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

#[test]
fn held_out_gsm8k_beats_length_and_the_target() {
    let m = measure("gsm8k_heldout.jsonl");
    assert_eq!(m.prompts, 661);
    assert!(
        m.learned >= m.length,
        "learned {:.3} < length {:.3}",
        m.learned,
        m.length
    );
    assert!(m.learned >= 0.62, "learned {:.3} < 0.62", m.learned);
}

#[test]
fn held_out_mmlu_subjects_beat_length_and_the_target() {
    let m = measure("mmlu_heldout_sample.jsonl");
    assert_eq!(m.prompts, 788);
    assert!(
        m.learned >= m.length,
        "learned {:.3} < length {:.3}",
        m.learned,
        m.length
    );
    assert!(m.learned >= 0.60, "learned {:.3} < 0.60", m.learned);
}

#[test]
fn open_ended_chat_beats_length_and_the_target() {
    // MT-Bench's first turns, the 72 questions RouteLLM keeps after
    // decontamination; the domain head's task-kind prior carries this one.
    let m = measure("mtbench.jsonl");
    assert_eq!(m.prompts, 72);
    assert!(
        m.learned >= m.length,
        "learned {:.3} < length {:.3}",
        m.learned,
        m.length
    );
    assert!(m.learned >= 0.65, "learned {:.3} < 0.65", m.learned);
}
