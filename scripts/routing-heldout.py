#!/usr/bin/env python3
"""Held-out validation sets for the learned triage, from RouteLLM's public
offline evaluation data (github.com/lm-sys/RouteLLM, Apache-2.0): everything
that is NOT in `shared/routing/`. Validation only; never used for training.

Usage, from a checkout of RouteLLM (standard library only):

    python3 scripts/routing-heldout.py ROUTELLM ../shared/routing OUT_DIR
    mantissa triage eval OUT_DIR/gsm8k_heldout.jsonl   # the other GSM8K prompts
    mantissa triage eval OUT_DIR/mmlu_heldout.jsonl    # the 28 MMLU subjects not in shared/
    python3 scripts/mtbench-outcomes.py ROUTELLM/routellm/evals/mt_bench > OUT_DIR/mtbench.jsonl
    mantissa triage eval OUT_DIR/mtbench.jsonl         # open-ended chat

Writes outcome lines in the format of `shared/routing/README.md`: `low` for
Mixtral-8x7B-Instruct and `high` for GPT-4-1106-preview, `domain` = the
benchmark or MMLU subject.
"""
import csv
import json
import os
import sys

csv.field_size_limit(1 << 30)
WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
NAMES = {"low": "mixtral-8x7b-instruct", "high": "gpt-4-1106-preview"}


def shared(path):
    prompts, domains = set(), set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            prompts.add(r["prompt"])
            domains.add(r.get("domain"))
    return prompts, domains


def emit(out, row, domain):
    for tier, column in (("low", WEAK), ("high", STRONG)):
        out.write(json.dumps({
            "prompt": row["prompt"],
            "tier": tier,
            "model": NAMES[tier],
            "score": 1.0 if row[column] == "True" else 0.0,
            "domain": domain,
        }) + "\n")


def main():
    routellm, shared_dir, out_dir = sys.argv[1:4]
    evals = os.path.join(routellm, "routellm", "evals")
    os.makedirs(out_dir, exist_ok=True)

    seen, _ = shared(os.path.join(shared_dir, "gsm8k_train.jsonl"))
    n = 0
    with open(os.path.join(out_dir, "gsm8k_heldout.jsonl"), "w", encoding="utf-8") as out:
        with open(os.path.join(evals, "gsm8k", "gsm8k_responses.csv"), encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["prompt"] not in seen:
                    emit(out, row, "gsm8k")
                    n += 1
    print(f"gsm8k_heldout.jsonl: {n} prompts", file=sys.stderr)

    seen, subjects = shared(os.path.join(shared_dir, "mmlu_train.jsonl"))
    n, kept = 0, 0
    responses = os.path.join(evals, "mmlu", "responses")
    with open(os.path.join(out_dir, "mmlu_heldout.jsonl"), "w", encoding="utf-8") as out:
        for name in sorted(os.listdir(responses)):
            subject = name[len("mmlu_"):-len(".csv")]
            if subject in subjects:
                continue
            kept += 1
            with open(os.path.join(responses, name), encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    if row["prompt"] not in seen:
                        emit(out, row, subject)
                        n += 1
    print(f"mmlu_heldout.jsonl: {n} prompts from {kept} subjects", file=sys.stderr)


if __name__ == "__main__":
    main()
