#!/usr/bin/env python3
"""Turns RouteLLM's MT-Bench judgements into outcome JSON lines for
`mantissa triage eval` (validation only: open-ended chat prompts of another
kind than the training data; never used for training).

Usage, from a checkout of github.com/lm-sys/RouteLLM (Apache-2.0):
    python3 scripts/mtbench-outcomes.py ROUTELLM/routellm/evals/mt_bench > mtbench.jsonl
    # all 80 questions, the contaminated ones too:
    python3 scripts/mtbench-outcomes.py --keep-contaminated ROUTELLM/routellm/evals/mt_bench
    # instead of outcome lines, each category's mean judgement per model (/10)
    # and the strong model's gain:
    python3 scripts/mtbench-outcomes.py --categories ROUTELLM/routellm/evals/mt_bench

Each question's first turn is the prompt (RouteLLM routes on it); each
judgement (1-10, one per turn) becomes a line with score = judgement / 10,
`low` for Mixtral-8x7B and `high` for GPT-4, so pairing averages the two
turns as RouteLLM's MT-Bench quality does. As RouteLLM's benchmark does,
questions with a turn listed in `contaminated_prompts.jsonl` (prompts that
also appear in its routers' training data) are left out: 72 of 80 remain.
"""
import json
import sys

TIERS = {"mistralai/Mixtral-8x7B-Instruct-v0.1": "low", "gpt-4-1106-preview": "high"}

flags = {a for a in sys.argv[1:] if a.startswith("--")}
unknown = flags - {"--keep-contaminated", "--categories"}
args = [a for a in sys.argv[1:] if not a.startswith("--")]
if unknown or len(args) != 1:
    sys.exit(__doc__)
root = args[0]
contaminated = set()
if "--keep-contaminated" not in flags:
    with open(f"{root}/contaminated_prompts.jsonl") as f:
        contaminated = {json.loads(line)["eval_prompt"] for line in f if line.strip()}
questions = {}
with open(f"{root}/question.jsonl") as f:
    for line in f:
        q = json.loads(line)
        if any(turn in contaminated for turn in q["turns"][:2]):
            continue
        questions[q["question_id"]] = (q["turns"][0], q["category"])
lines = []
with open(f"{root}/judgements.jsonl") as f:
    for line in f:
        j = json.loads(line)
        tier = TIERS.get(j["model"])
        if tier is None or j["question_id"] not in questions:
            continue
        prompt, category = questions[j["question_id"]]
        score = max(0.0, min(1.0, float(j["score"]) / 10.0))
        lines.append((prompt, category, tier, j["model"], score))
if "--categories" in flags:
    sums = {}
    for _, category, tier, _, score in lines:
        s = sums.setdefault(category, {"low": [0.0, 0], "high": [0.0, 0]})[tier]
        s[0] += score
        s[1] += 1
    print(f"{'category':12} {'low':>6} {'high':>6} {'gain':>7}")
    for category, s in sorted(sums.items()):
        low, high = (s[t][0] / max(s[t][1], 1) for t in ("low", "high"))
        print(f"{category:12} {low:6.3f} {high:6.3f} {high - low:+7.3f}")
else:
    for prompt, _, tier, model, score in lines:
        print(json.dumps({
            "prompt": prompt,
            "tier": tier,
            "model": model,
            "score": score,
            "domain": "mt_bench",
        }))
