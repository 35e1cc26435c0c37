//! `mantissa triage …`: train, score, evaluate and cross-validate.

use std::error::Error;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use mantissa_triage::learned::eval::{self, FoldResult, GroupBy, RouterMetrics};
use mantissa_triage::learned::train::{self, LineError, Outcome, Progress, TrainConfig};
use mantissa_triage::learned::{Model, builtin_model};
use serde::Deserialize;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The outcome file format, shared by `train`, `eval` and `cv`.
const OUTCOMES_HELP: &str = "\
OUTCOME FILES are JSON lines, one observed call per line:
  {\"prompt\": \"...\", \"tier\": \"low\", \"model\": \"mixtral-8x7b\", \"score\": 1.0}
`score` is in [0, 1] (1 = the answer was good). Tiers are `low`, `medium`,
`high` unless --tiers names them. An optional `domain` (a subject, a kind of
task) groups lines: training weighs the domains alike and learns its
task-kind prior from their failure rates; `cv` holds out whole domains.
Other extra fields are ignored. A bad line stops the command with an error
naming the file and line.";

#[derive(Debug, Subcommand)]
pub(crate) enum TriageCommand {
    /// Train a model on outcome JSON lines and write it to a file.
    #[command(after_help = OUTCOMES_HELP)]
    Train(TrainArgs),
    /// Score prompts: `{"prompt": "..."}` JSON lines on stdin, `{"score": x}`
    /// lines on stdout, one per input line, in order.
    ///
    /// The score in [0, 1] is how much a stronger tier is needed (0.5: the
    /// strongest tier is not expected to do better than the cheapest).
    #[command(after_help = "EXAMPLE:\n  echo '{\"prompt\": \"What is 2 + 2?\"}' | mantissa triage score")]
    Score(ScoreArgs),
    /// Evaluate a model on outcome files with RouteLLM's metric (APGR,
    /// CPT(50 %), CPT(80 %)), beside a random and a length-only router.
    ///
    /// Each prompt needs an outcome of the model's cheapest and of its
    /// strongest tier (lines are paired by prompt text).
    #[command(after_help = OUTCOMES_HELP)]
    Eval(EvalArgs),
    /// Cross-validate training settings: k folds over held-out groups
    /// (`domain` when every line has one, else prompts); prints each fold's
    /// APGR beside length-only and random, and the means.
    #[command(after_help = OUTCOMES_HELP)]
    Cv(CvArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TrainOptions {
    /// Hash bits: the model holds 2^BITS weights per head (the tiers' and
    /// the domain head; 4 bytes each).
    #[arg(long, default_value_t = 17, value_parser = clap::value_parser!(u8).range(8..=20))]
    bits: u8,
    /// Passes over the data, each one full-batch gradient step (training
    /// is deterministic: the same data give the same model bytes).
    #[arg(long, default_value_t = 400)]
    epochs: u32,
    /// L2 penalty on the n-gram weights (the dense features get 100 times it).
    #[arg(long, default_value_t = 0.002)]
    l2: f32,
    /// Seed of `cv`'s fold assignment and random baseline.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Tier names, cheapest first, comma-separated [default: low,medium,high as present].
    #[arg(long, value_delimiter = ',')]
    tiers: Option<Vec<String>>,
    /// Weight of the length prior in the score, 0 to 1: the score is this
    /// share of the prompt's length percentile, `--domain-weight` of its
    /// task-kind percentile, and the rest of its learned-gain percentile
    /// (both weights 0 = the learned gain alone).
    #[arg(long, default_value_t = 0.35, value_parser = unit_interval)]
    length_weight: f32,
    /// Weight of the task-kind prior, 0 to 1 (at most 1 minus the length
    /// weight): this share of the score is the percentile of how often the
    /// cheapest tier fails on the prompt's kind of task, learned from each
    /// `domain`'s failure rate (needs two or more domains in the data).
    #[arg(long, default_value_t = 0.3, value_parser = unit_interval)]
    domain_weight: f32,
    /// L2 penalty of the domain head (it fits one rate per domain, so it
    /// needs far less than the per-outcome tier heads).
    #[arg(long, default_value_t = 0.000_07)]
    domain_l2: f32,
    /// Weigh every line alike instead of every `domain` alike (by default
    /// each domain, and the lines without one together, weigh the same in
    /// total, so the largest subject does not dominate).
    #[arg(long)]
    no_balance_domains: bool,
}

fn unit_interval(s: &str) -> std::result::Result<f32, String> {
    let x: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("must be between 0 and 1, got {x}"))
    }
}

impl TrainOptions {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            bits: self.bits,
            epochs: self.epochs,
            l2: self.l2,
            seed: self.seed,
            tiers: self.tiers.clone(),
            length_weight: self.length_weight,
            domain_weight: self.domain_weight,
            domain_l2: self.domain_l2,
            balance_domains: !self.no_balance_domains,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Where to write the model.
    #[arg(long, short)]
    out: PathBuf,
    #[command(flatten)]
    options: TrainOptions,
    /// Outcome files (JSON lines).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ScoreArgs {
    /// A model file [default: the built-in model].
    #[arg(long, short)]
    model: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// A model file [default: the built-in model].
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// Seed of the random router.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Outcome files (JSON lines).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GroupArg {
    /// `domain` when every line has one, else prompt.
    Auto,
    /// Hold out whole domains.
    Domain,
    /// Hold out prompts.
    Prompt,
}

#[derive(Debug, Args)]
pub(crate) struct CvArgs {
    /// Number of folds.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// What a fold holds out.
    #[arg(long, value_enum, default_value_t = GroupArg::Auto)]
    group_by: GroupArg,
    #[command(flatten)]
    options: TrainOptions,
    /// Outcome files (JSON lines).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub(crate) fn run(cmd: TriageCommand) -> Result<()> {
    match cmd {
        TriageCommand::Train(a) => train_cmd(a),
        TriageCommand::Score(a) => score_cmd(a),
        TriageCommand::Eval(a) => eval_cmd(a),
        TriageCommand::Cv(a) => cv_cmd(a),
    }
}

/// Where a line came from: `(file index, line number)`.
type Origin = (usize, usize);

/// Reads every outcome of `files`, with the origin of each.
fn read_files(files: &[PathBuf], progress: bool) -> Result<(Vec<Outcome>, Vec<Origin>)> {
    let mut outcomes = Vec::new();
    let mut origin = Vec::new();
    for (f, path) in files.iter().enumerate() {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| format!("{name}: {e}"))?;
        let before = outcomes.len();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| LineError {
                source_name: name.clone(),
                line: i + 1,
                problem: e.to_string(),
            })?;
            outcomes.push(train::parse_outcome(&line, &name, i + 1)?);
            origin.push((f, i + 1));
            if progress && (i + 1) % 50_000 == 0 {
                eprintln!("  {name}: {} lines", i + 1);
            }
        }
        if progress {
            eprintln!("read {} outcomes from {name}", outcomes.len() - before);
        }
    }
    Ok((outcomes, origin))
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    let (outcomes, _) = read_files(&a.files, true)?;
    let config = a.options.config();
    eprintln!(
        "training on {} outcomes: {} epochs, 2^{} buckets",
        outcomes.len(),
        config.epochs,
        config.bits
    );
    let model = train::train(&outcomes, &config, |p: Progress| {
        eprintln!("epoch {}/{}: log loss {:.4}", p.epoch, p.epochs, p.loss);
    })?;
    model.save(&a.out)?;
    let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({size} bytes; tiers {}; length weight {}, domain weight {})",
        a.out.display(),
        model.tiers().join(", "),
        model.length_weight(),
        model.domain_weight()
    );
    if config.domain_weight > 0.0 && model.domain_weight() == 0.0 {
        eprintln!(
            "note: the cheapest tier has outcomes in fewer than two `domain`s, so there is no \
             kind of task to tell apart: the task-kind prior is off (domain weight 0)"
        );
    }
    Ok(())
}

fn load_model(path: Option<&PathBuf>) -> Result<std::sync::Arc<Model>> {
    Ok(match path {
        Some(p) => std::sync::Arc::new(Model::load(p)?),
        None => builtin_model()?,
    })
}

#[derive(Deserialize)]
struct PromptLine {
    prompt: String,
}

fn score_cmd(a: ScoreArgs) -> Result<()> {
    let model = load_model(a.model.as_ref())?;
    let f = model.featurizer();
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut line = String::new();
    let mut reader = stdin;
    let mut n = 0usize;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(|e| LineError {
            source_name: "stdin".into(),
            line: n + 1,
            problem: e.to_string(),
        });
        let read = match read {
            Ok(r) => r,
            Err(e) => {
                out.flush()?;
                return Err(e.into());
            }
        };
        if read == 0 {
            break;
        }
        n += 1;
        let text = line.trim_end_matches(['\n', '\r']);
        let bad = |problem: String| LineError {
            source_name: "stdin".into(),
            line: n,
            problem,
        };
        if text.trim().is_empty() {
            out.flush()?;
            return Err(bad("empty line (expected {\"prompt\": \"...\"})".into()).into());
        }
        let p: PromptLine = match serde_json::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                out.flush()?;
                return Err(bad(e.to_string()).into());
            }
        };
        let score = model.score_with_featurizer(&f, &p.prompt);
        writeln!(out, "{}", serde_json::json!({ "score": score }))?;
        out.flush()?;
    }
    out.flush()?;
    Ok(())
}

fn row(name: &str, m: &RouterMetrics) -> String {
    format!(
        "{name:<10} {:>6.3} {:>9.1}% {:>9.1}%",
        m.apgr,
        m.cpt50 * 100.0,
        m.cpt80 * 100.0
    )
}

const HEADER: &str = "router       APGR  CPT(50%)  CPT(80%)";

fn eval_cmd(a: EvalArgs) -> Result<()> {
    let model = load_model(a.model.as_ref())?;
    let (outcomes, origin) = read_files(&a.files, false)?;
    let tiers = model.tiers();
    let (weak, strong) = (&tiers[0], &tiers[tiers.len() - 1]);
    let paired = eval::pair(&outcomes, weak, strong);
    if let Some(first) = paired.unpaired.first() {
        let (f, line) = origin[*first];
        eprintln!(
            "warning: {} lines have no `{weak}`/`{strong}` partner and are not evaluated (first: {} line {line})",
            paired.unpaired.len(),
            a.files[f].display()
        );
    }
    if paired.prompts.is_empty() {
        return Err(format!("no prompt has both a `{weak}` and a `{strong}` outcome").into());
    }
    let scores: Vec<f64> = paired.prompts.iter().map(|p| model.score(p)).collect();
    let (random, length) = eval::baselines(&paired.prompts, a.seed);
    let learned = eval::evaluate(&scores, &paired.weak, &paired.strong)?;
    let length = eval::evaluate(&length, &paired.weak, &paired.strong)?;
    let random = eval::evaluate(&random, &paired.weak, &paired.strong)?;
    println!(
        "{} prompts; `{weak}` alone {:.3}, `{strong}` alone {:.3}",
        paired.prompts.len(),
        learned.weak,
        learned.strong
    );
    println!("{HEADER}");
    println!("{}", row("learned", &learned));
    println!("{}", row("length", &length));
    println!("{}", row("random", &random));
    Ok(())
}

fn cv_cmd(a: CvArgs) -> Result<()> {
    let (outcomes, origin) = read_files(&a.files, true)?;
    let source: Vec<usize> = origin.iter().map(|(f, _)| *f).collect();
    let group_by = match a.group_by {
        GroupArg::Auto => GroupBy::Auto,
        GroupArg::Domain => GroupBy::Domain,
        GroupArg::Prompt => GroupBy::Prompt,
    };
    let config = a.options.config();
    let names: Vec<String> = a
        .files
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    println!(
        "{:<24} {:>4} {:>7} {:>8} {:>7} {:>7}",
        "data set", "fold", "prompts", "learned", "length", "random"
    );
    let results = eval::cross_validate(
        &outcomes,
        &source,
        a.files.len(),
        a.folds,
        group_by,
        &config,
        |i, r: &FoldResult| {
            for (name, s) in names.iter().zip(&r.sources) {
                if let Some(s) = s {
                    println!(
                        "{name:<24} {:>4} {:>7} {:>8.3} {:>7.3} {:>7.3}",
                        i + 1,
                        s.prompts,
                        s.learned.apgr,
                        s.length.apgr,
                        s.random.apgr
                    );
                }
            }
        },
    )?;
    println!("mean APGR over folds (CPT(50%) in brackets):");
    for (k, name) in names.iter().enumerate() {
        let per: Vec<&eval::SourceResult> = results.iter().filter_map(|r| r.sources[k].as_ref()).collect();
        if per.is_empty() {
            continue;
        }
        let n = per.len() as f64;
        let mean = |f: &dyn Fn(&eval::SourceResult) -> f64| per.iter().map(|s| f(s)).sum::<f64>() / n;
        println!(
            "{name:<24} learned {:.3} ({:.1}%)  length {:.3} ({:.1}%)  random {:.3} ({:.1}%)  [{} folds]",
            mean(&|s| s.learned.apgr),
            mean(&|s| s.learned.cpt50) * 100.0,
            mean(&|s| s.length.apgr),
            mean(&|s| s.length.cpt50) * 100.0,
            mean(&|s| s.random.apgr),
            mean(&|s| s.random.cpt50) * 100.0,
            per.len()
        );
    }
    Ok(())
}
