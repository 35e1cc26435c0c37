#!/usr/bin/env python3
"""Turns RouteLLM's MT-Bench judgements into outcome JSON lines for
`mantissa triage eval` (validation only: open-ended chat prompts of another
kind than the training data; never used for training).

Usage, from a checkout of github.com/lm-sys/RouteLLM (Apache-2.0):
    python3 scripts/mtbench-outcomes.py ROUTELLM/routellm/evals/mt_bench > mtbench.jsonl

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

root = sys.argv[1]
with open(f"{root}/contaminated_prompts.jsonl") as f:
    contaminated = {json.loads(line)["eval_prompt"] for line in f if line.strip()}
questions = {}
with open(f"{root}/question.jsonl") as f:
    for line in f:
        q = json.loads(line)
        if any(turn in contaminated for turn in q["turns"][:2]):
            continue
        questions[q["question_id"]] = q["turns"][0]
with open(f"{root}/judgements.jsonl") as f:
    for line in f:
        j = json.loads(line)
        tier = TIERS.get(j["model"])
        if tier is None or j["question_id"] not in questions:
            continue
        print(json.dumps({
            "prompt": questions[j["question_id"]],
            "tier": tier,
            "model": j["model"],
            "score": max(0.0, min(1.0, float(j["score"]) / 10.0)),
            "domain": "mt_bench",
        }))
