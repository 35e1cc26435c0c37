//! [`RuleTriage`]: a cheap, deterministic triage from weighted features of
//! the latest user turn.
//!
//! # Features
//!
//! Only the latest user message is read (found by scanning back from the
//! end of the history, so the cost does not depend on how long the history
//! is). Each feature is a value in `[0, 1]`:
//!
//! | feature | how it is measured | saturates at |
//! |---|---|---|
//! | `length` | estimated tokens (bytes / 4, as [`CharEstimator`](mantissa_core::CharEstimator)) | 1,500 tokens |
//! | `code` | a fenced block (three backticks) counts fully; otherwise code punctuation `{ } ;` plus code words (`fn`, `def`, `import`, `return`, …) | 12 |
//! | `reasoning` | markers: `prove`, `derive`, `analyze`, `compare`, `evaluate`, `plan`, `design`, `optimize`, `debug`, `refactor`, `implement`, `algorithm`, …; `step by step` counts 2; a numbered list of 3+ items counts 2 | 2 markers |
//! | `questions` | question marks beyond the first | 3 extra |
//! | `tools` | tools are offered to the model | any |
//!
//! They combine as a noisy-or, `score = 1 − Π (1 − wᵢ·fᵢ)`: any single strong
//! signal can raise the score on its own, several signals reinforce each
//! other, and the score stays in `[0, 1]` without renormalising. Default
//! weights: length 0.5, code 0.7, reasoning 0.7, questions 0.35, tools 0.15 —
//! a code block or a multi-step / proof request alone scores 0.7 (top tier
//! with the default [`Boundaries`] 0.25 / 0.6), a single reasoning marker
//! scores 0.35 (middle), a long turn alone at most 0.5 (middle), offering
//! tools alone 0.15 (bottom: nearly every agent call offers tools).
//!
//! An explicit stakes hint in `metadata["stakes"]`
//! ([`mantissa_core::METADATA_STAKES`]) then sets a floor:
//! `high` / `critical` → the top tier, `medium` → at least the middle tier,
//! `low` → no floor (reason `stakes` when the floor changed the tier).
//!
//! # Cost
//!
//! Byte-class counts (question marks, backticks, code punctuation,
//! numbered-list items) are taken over the whole turn in one vectorisable
//! pass (list items are checked only in blocks that hold a newline). Word
//! markers need a scalar scan, so they are searched in the first and last [`keyword_window`](RuleTriage::keyword_window)
//! bytes (128 by default), where instructions ("compare…", "step by step")
//! sit. No regular expressions, no allocation per call.
//!
//! # Example
//!
//! ```
//! use mantissa_core::{LlmRequest, Message, Tier, TierSet};
//! use mantissa_triage::{Boundaries, RuleTriage, RuleWeights, Triage};
//!
//! let tiers = TierSet::default(); // low / medium / high
//! let triage = RuleTriage::new(&tiers);
//! let chat = LlmRequest::new("s", "a", vec![Message::user("Hi! How are you today?")]);
//! assert_eq!(triage.triage(&chat).tier, Tier::low());
//! let proof = LlmRequest::new("s", "a", vec![Message::user(
//!     "Prove step by step that the sum of two even numbers is even.")]);
//! assert_eq!(triage.triage(&proof).tier, Tier::high());
//!
//! // Customised: code weighs less, and the top tier starts at 0.8.
//! let triage = RuleTriage::new(&tiers)
//!     .weights(RuleWeights { code: 0.4, ..RuleWeights::default() }).unwrap()
//!     .boundaries(Boundaries::new(vec![0.3, 0.8]).unwrap()).unwrap();
//! let code = LlmRequest::new("s", "a", vec![Message::user("Why does this fail?\n```\nx = 1\n```")]);
//! assert_eq!(triage.triage(&code).tier, Tier::medium());
//! ```

use mantissa_core::{ConfigError, LlmRequest, METADATA_STAKES, Tier, TierSet};

use crate::decision::{Boundaries, TierDecision, Triage, TriageReason, tier_names};

/// Weights of [`RuleTriage`]'s features, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleWeights {
    /// Length of the turn. Defaults to 0.5.
    pub length: f64,
    /// Code in the turn. Defaults to 0.7.
    pub code: f64,
    /// Reasoning and multi-step markers. Defaults to 0.7.
    pub reasoning: f64,
    /// Several questions in one turn. Defaults to 0.35.
    pub questions: f64,
    /// Tools offered. Defaults to 0.15.
    pub tools: f64,
}

impl Default for RuleWeights {
    fn default() -> Self {
        Self {
            length: 0.5,
            code: 0.7,
            reasoning: 0.7,
            questions: 0.35,
            tools: 0.15,
        }
    }
}

/// Feature values of one request, each in `[0, 1]` (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Length feature.
    pub length: f64,
    /// Code feature.
    pub code: f64,
    /// Reasoning feature.
    pub reasoning: f64,
    /// Questions feature.
    pub questions: f64,
    /// Tools feature.
    pub tools: f64,
}

/// Rule-based triage over the latest user turn. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct RuleTriage {
    tiers: Vec<Tier>,
    boundaries: Boundaries,
    weights: RuleWeights,
    length_saturation: f64,
    keyword_window: usize,
}

impl RuleTriage {
    /// Rule triage for the tiers of `set`, with default weights and
    /// [`Boundaries::default_for`] the number of tiers.
    pub fn new(set: &TierSet) -> Self {
        let tiers = tier_names(set);
        Self {
            boundaries: Boundaries::default_for(tiers.len()),
            tiers,
            weights: RuleWeights::default(),
            length_saturation: 1500.0,
            keyword_window: 128,
        }
    }

    /// Sets the score cut points (one fewer than tiers), for example from
    /// [`calibrate`](crate::calibrate()). Defaults to
    /// [`Boundaries::default_for`] the number of tiers.
    pub fn boundaries(mut self, boundaries: Boundaries) -> Result<Self, ConfigError> {
        boundaries.check_len(self.tiers.len())?;
        self.boundaries = boundaries;
        Ok(self)
    }

    /// Sets the feature weights (each in `[0, 1]`). Defaults to
    /// [`RuleWeights::default`].
    pub fn weights(mut self, weights: RuleWeights) -> Result<Self, ConfigError> {
        for (name, w) in [
            ("length", weights.length),
            ("code", weights.code),
            ("reasoning", weights.reasoning),
            ("questions", weights.questions),
            ("tools", weights.tools),
        ] {
            if !(0.0..=1.0).contains(&w) {
                return Err(ConfigError::new(
                    format!("weights.{name}"),
                    format!("must be in [0, 1], got {w}"),
                ));
            }
        }
        self.weights = weights;
        Ok(self)
    }

    /// Sets the estimated token count at which the length feature saturates.
    /// Defaults to 1,500 tokens (about 6 KB of text: a long, detailed brief).
    pub fn length_saturation(mut self, tokens: u32) -> Self {
        self.length_saturation = f64::from(tokens.max(1));
        self
    }

    /// Sets how many bytes at the start and at the end of the turn are
    /// searched for word markers. Defaults to 128 (about the first and the last sentence).
    pub fn keyword_window(mut self, bytes: usize) -> Self {
        self.keyword_window = bytes;
        self
    }

    /// The boundaries in use.
    pub fn get_boundaries(&self) -> &Boundaries {
        &self.boundaries
    }

    /// The feature values of `req`.
    pub fn signals(&self, req: &LlmRequest) -> Signals {
        let text = req.latest_user_message().map(|m| m.text()).unwrap_or("");
        Signals {
            tools: if req.tools.is_empty() { 0.0 } else { 1.0 },
            ..self.text_signals(text)
        }
    }

    /// The feature values of a user turn's text alone (`tools` is 0). The
    /// [learned triage](crate::learned) reads these as some of its features.
    pub fn text_signals(&self, text: &str) -> Signals {
        let bytes = text.as_bytes();
        // A turn the word scan covers whole (most turns) is read once; a
        // longer one is counted in lanes and its windows scanned for words.
        let (counts, words) = if bytes.len() <= self.keyword_window.saturating_mul(2) {
            scan_all(bytes)
        } else {
            (count_bytes(bytes), scan_words(bytes, self.keyword_window))
        };
        let tokens = bytes.len().div_ceil(4) as f64;
        let fence = if counts.backticks >= 3 { 1.0 } else { 0.0 };
        let code_hits = counts.code_punct + words.code_words * 2;
        let mut markers = words.markers;
        if counts.list_items >= 3 {
            markers += 2;
        }
        Signals {
            length: (tokens / self.length_saturation).min(1.0),
            code: f64::max(fence, (f64::from(code_hits) / 12.0).min(1.0)),
            reasoning: (f64::from(markers) / 2.0).min(1.0),
            questions: (f64::from(counts.questions.saturating_sub(1)) / 3.0).min(1.0),
            tools: 0.0,
        }
    }

    /// The noisy-or combination of `signals` with the configured weights.
    pub fn combine(&self, s: &Signals) -> f64 {
        let w = &self.weights;
        let keep = (1.0 - w.length * s.length)
            * (1.0 - w.code * s.code)
            * (1.0 - w.reasoning * s.reasoning)
            * (1.0 - w.questions * s.questions)
            * (1.0 - w.tools * s.tools);
        (1.0 - keep).clamp(0.0, 1.0)
    }

    /// The score of `req` in `[0, 1]`.
    pub fn score(&self, req: &LlmRequest) -> f64 {
        self.combine(&self.signals(req))
    }
}

impl Triage for RuleTriage {
    fn triage(&self, req: &LlmRequest) -> TierDecision {
        let Some(top) = self.tiers.len().checked_sub(1) else {
            return TierDecision::new(Tier::low(), 0.0, TriageReason::Default);
        };
        if req.latest_user_message().is_none() {
            return TierDecision::new(self.tiers[0].clone(), 0.0, TriageReason::Default);
        }
        let mut score = self.score(req);
        let mut rank = self.boundaries.rank(score).min(top);
        let mut reason = TriageReason::Rules;
        if let Some(stakes) = req.metadata.get(METADATA_STAKES) {
            let floor = if stakes.eq_ignore_ascii_case("high") || stakes.eq_ignore_ascii_case("critical") {
                top
            } else if stakes.eq_ignore_ascii_case("medium") {
                self.tiers.len() / 2
            } else {
                0
            };
            if floor > rank {
                rank = floor;
                score = score.max(self.boundaries.floor_of(rank));
                reason = TriageReason::Stakes;
            }
        }
        TierDecision::new(self.tiers[rank].clone(), score, reason)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ByteCounts {
    questions: u32,
    backticks: u32,
    code_punct: u32,
    list_items: u32,
}

/// Whether a numbered-list item (`<digit>[.)]`) starts at `i`.
fn item_at(bytes: &[u8], i: usize) -> bool {
    bytes.get(i).is_some_and(u8::is_ascii_digit) && matches!(bytes.get(i + 1), Some(b'.' | b')'))
}

/// Bytes per block of the counting pass: the inner loop over a fixed-size
/// block compiles to a few vector compares per 16 bytes.
const LANES: usize = 32;

/// One pass of byte-class counts, written so that the compiler vectorises
/// it: fixed-size blocks, u8 lane counters (flushed every 255 blocks), no
/// branches but one per block for newlines; numbered-list items
/// (`\n<digit>[.)]`) are checked only at the newlines of blocks that have any.
fn count_bytes(bytes: &[u8]) -> ByteCounts {
    let mut out = ByteCounts::default();
    if item_at(bytes, 0) {
        out.list_items += 1;
    }
    let mut q = [0u8; LANES];
    let mut t = [0u8; LANES];
    let mut c = [0u8; LANES];
    let flush = |out: &mut ByteCounts, q: &mut [u8; LANES], t: &mut [u8; LANES], c: &mut [u8; LANES]| {
        out.questions += q.iter().map(|&x| u32::from(x)).sum::<u32>();
        out.backticks += t.iter().map(|&x| u32::from(x)).sum::<u32>();
        out.code_punct += c.iter().map(|&x| u32::from(x)).sum::<u32>();
        *q = [0; LANES];
        *t = [0; LANES];
        *c = [0; LANES];
    };
    let blocks = bytes.chunks_exact(LANES);
    let rest = blocks.remainder();
    let mut pending = 0u32;
    for (n, block) in blocks.enumerate() {
        let Ok(block) = <&[u8; LANES]>::try_from(block) else {
            continue;
        };
        let mut newline = false;
        for j in 0..LANES {
            let a = block[j];
            q[j] += u8::from(a == b'?');
            t[j] += u8::from(a == b'`');
            c[j] += u8::from((a == b'{') | (a == b'}') | (a == b';'));
            newline |= a == b'\n';
        }
        if newline {
            let base = n * LANES;
            for (j, &a) in block.iter().enumerate() {
                out.list_items += u32::from(a == b'\n' && item_at(bytes, base + j + 1));
            }
        }
        pending += 1;
        if pending == 255 {
            flush(&mut out, &mut q, &mut t, &mut c);
            pending = 0;
        }
    }
    flush(&mut out, &mut q, &mut t, &mut c);
    let base = bytes.len() - rest.len();
    for (j, &a) in rest.iter().enumerate() {
        out.questions += u32::from(a == b'?');
        out.backticks += u32::from(a == b'`');
        out.code_punct += u32::from((a == b'{') | (a == b'}') | (a == b';'));
        out.list_items += u32::from(a == b'\n' && item_at(bytes, base + j + 1));
    }
    out
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct WordCounts {
    markers: u32,
    code_words: u32,
}

/// Packs up to the first 8 lowercase ASCII letters of a word into a u64
/// (little-endian), so a word compares to a keyword in one instruction.
/// Words longer than 8 letters match keywords by their first 8 letters
/// (`tradeoffs` matches `tradeoff`, `algorithms` matches `algorith`).
const fn pack(word: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < word.len() && i < 8 {
        v |= (word[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

const STEP: u64 = pack(b"step");
const BY: u64 = pack(b"by");

/// Reasoning markers (packed to their first 8 letters).
const MARKERS: [&[u8]; 35] = [
    b"prove",
    b"proof",
    b"proving",
    b"derive",
    b"analyze",
    b"analyse",
    b"analysis",
    b"analyzin",
    b"compare",
    b"comparis",
    b"contrast",
    b"evaluate",
    b"assess",
    b"tradeoff",
    b"plan",
    b"planning",
    b"strategy",
    b"design",
    b"architec",
    b"optimize",
    b"optimise",
    b"optimiza",
    b"debug",
    b"debuggin",
    b"refactor",
    b"implemen",
    b"algorith",
    b"justify",
    b"calculat",
    b"solve",
    b"diagnose",
    b"investig",
    b"rigorous",
    b"thorough",
    b"reasonin",
];

/// Code words.
const CODE_WORDS: [&[u8]; 16] = [
    b"fn",
    b"def",
    b"impl",
    b"struct",
    b"import",
    b"lambda",
    b"println",
    b"printf",
    b"void",
    b"elif",
    b"namespac",
    b"typedef",
    b"nullptr",
    b"func",
    b"self",
    b"std",
];

/// Slots of the keyword table (a power of two, about 2.5 × the keywords, so
/// a lookup is one or two probes).
const TABLE_BITS: u32 = 7;

/// The slot a packed word hashes to (multiplicative hashing).
const fn slot_of(w: u64) -> usize {
    (w.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - TABLE_BITS)) as usize
}

/// Open-addressing table of the packed keywords: `(word, class)`, class 1 =
/// marker, 2 = code word, word 0 = empty slot. Built at compile time.
const KEYWORDS: [(u64, u8); 1 << TABLE_BITS] = {
    let mut table = [(0u64, 0u8); 1 << TABLE_BITS];
    let mut i = 0;
    while i < MARKERS.len() + CODE_WORDS.len() {
        let (word, class) = if i < MARKERS.len() {
            (pack(MARKERS[i]), 1)
        } else {
            (pack(CODE_WORDS[i - MARKERS.len()]), 2)
        };
        let mut s = slot_of(word);
        while table[s].0 != 0 {
            s = (s + 1) & ((1 << TABLE_BITS) - 1);
        }
        table[s] = (word, class);
        i += 1;
    }
    table
};

/// `(markers, code words)` a packed word counts for.
#[inline]
fn classify_word(w: u64) -> (u32, u32) {
    let mut s = slot_of(w);
    loop {
        let (word, class) = KEYWORDS[s];
        if word == w {
            return (u32::from(class == 1), u32::from(class == 2));
        }
        if word == 0 {
            return (0, 0);
        }
        s = (s + 1) & ((1 << TABLE_BITS) - 1);
    }
}

/// The word scanner's state; it lives in locals, so it stays in registers.
#[derive(Default)]
struct Words {
    word: u64,
    len: u32,
    prev1: u64,
    prev2: u64,
    markers: u32,
    code_words: u32,
}

impl Words {
    /// Classifies the word that just ended.
    #[inline]
    fn end_word(&mut self) {
        let (m, c) = classify_word(self.word);
        self.markers += m;
        self.code_words += c;
        if self.word == STEP && self.prev1 == BY && self.prev2 == STEP {
            self.markers += 2;
        }
        self.prev2 = self.prev1;
        self.prev1 = self.word;
        self.word = 0;
        self.len = 0;
    }
}

/// Counts markers and code words in `bytes`; a word is classified only when it ends.
#[inline]
fn scan_span(bytes: &[u8], out: &mut WordCounts) {
    let mut w = Words::default();
    for &b in bytes {
        let l = b | 0x20;
        if l.wrapping_sub(b'a') < 26 {
            if w.len < 8 {
                w.word |= u64::from(l) << (8 * w.len);
            }
            w.len += 1;
        } else if w.len > 0 {
            w.end_word();
        }
    }
    if w.len > 0 {
        w.end_word();
    }
    out.markers += w.markers;
    out.code_words += w.code_words;
}

/// What [`count_bytes`] counts, by byte: 1 `?`, 2 a backtick, 3 code
/// punctuation (`{`, `}`, `;`), 4 a newline (a list item may follow), 0
/// nothing. No letter has a class.
const BYTE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'?' as usize] = 1;
    t[b'`' as usize] = 2;
    t[b'{' as usize] = 3;
    t[b'}' as usize] = 3;
    t[b';' as usize] = 3;
    t[b'\n' as usize] = 4;
    t
};

/// [`count_bytes`] and [`scan_span`] over the whole of `bytes` in one pass:
/// the scan of a turn no longer than both keyword windows together (the
/// word scan then covers it whole), so the result is theirs.
fn scan_all(bytes: &[u8]) -> (ByteCounts, WordCounts) {
    let mut counts = ByteCounts::default();
    if item_at(bytes, 0) {
        counts.list_items += 1;
    }
    let mut w = Words::default();
    for (i, &b) in bytes.iter().enumerate() {
        let l = b | 0x20;
        if l.wrapping_sub(b'a') < 26 {
            if w.len < 8 {
                w.word |= u64::from(l) << (8 * w.len);
            }
            w.len += 1;
            continue;
        }
        if w.len > 0 {
            w.end_word();
        }
        match BYTE_CLASS[usize::from(b)] {
            0 => {}
            1 => counts.questions += 1,
            2 => counts.backticks += 1,
            3 => counts.code_punct += 1,
            _ => counts.list_items += u32::from(item_at(bytes, i + 1)),
        }
    }
    if w.len > 0 {
        w.end_word();
    }
    let words = WordCounts {
        markers: w.markers,
        code_words: w.code_words,
    };
    (counts, words)
}

/// Word markers in the head and tail windows of `bytes`.
fn scan_words(bytes: &[u8], window: usize) -> WordCounts {
    let mut out = WordCounts::default();
    if bytes.len() <= window.saturating_mul(2) {
        scan_span(bytes, &mut out);
        return out;
    }
    scan_span(&bytes[..window], &mut out);
    // Start the tail on a word boundary so a cut word is not mistaken for a marker.
    let mut start = bytes.len() - window;
    while start < bytes.len() && (bytes[start] | 0x20).is_ascii_lowercase() {
        start += 1;
    }
    scan_span(&bytes[start..], &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mantissa_core::{Message, ToolSpec};

    fn req(text: &str) -> LlmRequest {
        LlmRequest::new(
            "s",
            "a",
            vec![Message::system("You are helpful."), Message::user(text)],
        )
    }

    fn tier(t: &RuleTriage, text: &str) -> String {
        t.triage(&req(text)).tier.to_string()
    }

    #[test]
    fn chit_chat_is_low() {
        let t = RuleTriage::new(&TierSet::default());
        for text in [
            "Hi! How are you today?",
            "thanks, that's great",
            "What's the capital of France?",
            "Tell me a joke about cats.",
        ] {
            assert_eq!(tier(&t, text), "low", "{text}");
        }
    }

    #[test]
    fn code_multistep_and_stakes_are_high() {
        let t = RuleTriage::new(&TierSet::default());
        let code = "Why does this panic?\n```rust\nfn main() { let v: Vec<u8> = vec![]; v[0]; }\n```";
        assert_eq!(tier(&t, code), "high");
        let unfenced =
            "fix this: fn f(x: i32) -> i32 { if x > 0 { x } else { -x }; } struct A { b: u8; c: u8; }";
        assert_eq!(tier(&t, unfenced), "high");
        let steps = "Plan the migration step by step:\n1. inventory\n2. cutover\n3. rollback";
        assert_eq!(tier(&t, steps), "high");
        assert_eq!(
            tier(&t, "Prove that sqrt(2) is irrational, then derive a bound."),
            "high"
        );
        let stakes = req("ok, send it").with_metadata(mantissa_core::METADATA_STAKES, "High");
        let d = t.triage(&stakes);
        assert_eq!(d.tier, Tier::high());
        assert_eq!(d.reason, TriageReason::Stakes);
        assert!(d.score >= 0.6);
        let medium = req("ok, send it").with_metadata(mantissa_core::METADATA_STAKES, "medium");
        assert_eq!(t.triage(&medium).tier, Tier::medium());
    }

    #[test]
    fn middle_signals_are_medium() {
        let t = RuleTriage::new(&TierSet::default());
        assert_eq!(tier(&t, "Compare these two phones for me."), "medium");
        assert_eq!(
            tier(&t, "Where is it? When does it open? Is it free? Can I park?"),
            "medium"
        );
        let tools = req("what's the weather").with_tools(vec![ToolSpec::function(
            "weather",
            "get weather",
            serde_json::json!({}),
        )]);
        assert_eq!(t.triage(&tools).tier, Tier::low());
        let long = "word ".repeat(1600);
        assert_eq!(tier(&t, &long), "medium");
    }

    #[test]
    fn only_the_latest_user_turn_counts() {
        let t = RuleTriage::new(&TierSet::default());
        let mut msgs = vec![Message::user(
            "Prove step by step that P != NP, with an algorithm.",
        )];
        msgs.push(Message::assistant("..."));
        msgs.push(Message::user("thanks!"));
        let r = LlmRequest::new("s", "a", msgs);
        assert_eq!(t.triage(&r).tier, Tier::low());
        let empty = LlmRequest::new("s", "a", vec![Message::system("x")]);
        assert_eq!(t.triage(&empty).reason, TriageReason::Default);
    }

    #[test]
    fn markers_in_the_middle_of_a_long_turn_are_outside_the_window() {
        let t = RuleTriage::new(&TierSet::default()).keyword_window(64);
        let filler = "lorem ipsum ".repeat(40);
        let text = format!("{filler} prove derive analyze {filler}");
        let s = t.signals(&req(&text));
        assert_eq!(s.reasoning, 0.0);
        let tail = format!("{filler}{filler} prove and derive");
        assert_eq!(t.signals(&req(&tail)).reasoning, 1.0);
        // A word cut by the tail window's start is skipped, not matched.
        let cut = format!("{}xxplan", "a ".repeat(100));
        let t = RuleTriage::new(&TierSet::default()).keyword_window(4);
        assert_eq!(t.signals(&req(&cut)).reasoning, 0.0);
    }

    #[test]
    fn the_one_pass_scan_counts_what_the_two_scans_count() {
        let mut texts: Vec<String> = [
            "",
            "?",
            "1. a\n2. b\n3) c",
            "Why does this panic?\n```rust\nfn main() { let v: Vec<u8> = vec![]; v[0]; }\n```",
            "Plan the migration step by step:\n1. inventory\n2. cutover\n3. rollback",
            "Prove that sqrt(2) is irrational, then derive a bound.",
            "And what about TSLA? Compare it with ACME and say why.",
            "Ünïcödé tëxt? `code`; {braces} STEP BY STEP\n9) done\n",
            "fix this: fn f(x: i32) -> i32 { if x > 0 { x } else { -x }; } struct A { b: u8; c: u8; }",
            "Implementation of the ALGORITHM, thoroughly reasoning; investigate architecture optimizations",
        ]
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
        // Every byte value, around every class and word boundary.
        let all: Vec<u8> = (0..=255u8).collect();
        texts.push(String::from_utf8_lossy(&all).into_owned());
        let alphabet = b" aEpPrloOvVeSstTbByY?`{};\n12.)fnd";
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..300 {
            let text: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(alphabet[(x % alphabet.len() as u64) as usize])
                })
                .collect();
            texts.push(text);
        }
        for text in &texts {
            let bytes = text.as_bytes();
            let mut words = WordCounts::default();
            scan_span(bytes, &mut words);
            assert_eq!(scan_all(bytes), (count_bytes(bytes), words), "{text:?}");
        }
    }

    #[test]
    fn keywords_are_classified() {
        for m in MARKERS {
            assert_eq!(classify_word(pack(m)), (1, 0), "{}", String::from_utf8_lossy(m));
        }
        for c in CODE_WORDS {
            assert_eq!(classify_word(pack(c)), (0, 1), "{}", String::from_utf8_lossy(c));
        }
        for other in [&b"the"[..], b"report", b"summary", b"a", b"planet", b"stdout"] {
            assert_eq!(classify_word(pack(other)), (0, 0));
        }
    }

    #[test]
    fn byte_counts() {
        let c = count_bytes(b"1. a?\n2) b?\n3. c `x` {;}");
        assert_eq!(c.questions, 2);
        assert_eq!(c.backticks, 2);
        assert_eq!(c.code_punct, 3);
        assert_eq!(c.list_items, 3);
        let big = "?".repeat(1000);
        assert_eq!(count_bytes(big.as_bytes()).questions, 1000);
        // Block boundaries: the same counts as a naive scan, at every offset.
        let unit = "a?b`{c};\n1. x\n2) y\n";
        for len in 0..200 {
            let text: Vec<u8> = unit.bytes().cycle().take(len).collect();
            let naive = ByteCounts {
                questions: text.iter().filter(|&&b| b == b'?').count() as u32,
                backticks: text.iter().filter(|&&b| b == b'`').count() as u32,
                code_punct: text.iter().filter(|&&b| matches!(b, b'{' | b'}' | b';')).count() as u32,
                list_items: (0..text.len())
                    .filter(|&i| (i == 0 || text[i - 1] == b'\n') && item_at(&text, i))
                    .count() as u32,
            };
            assert_eq!(count_bytes(&text), naive, "length {len}");
        }
    }

    #[test]
    fn settings_are_validated() {
        let t = RuleTriage::new(&TierSet::default());
        let err = t
            .clone()
            .boundaries(Boundaries::new(vec![0.5]).unwrap())
            .unwrap_err();
        assert_eq!(err.field, "boundaries");
        let err = t
            .weights(RuleWeights {
                code: 1.5,
                ..RuleWeights::default()
            })
            .unwrap_err();
        assert_eq!(err.field, "weights.code");
    }
}
