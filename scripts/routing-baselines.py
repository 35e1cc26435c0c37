#!/usr/bin/env python3
"""Cross-check of the learned triage's held-out APGR with standard linear
models (scikit-learn), under the same protocol as `mantissa triage cv`:
GSM8K in 5 folds of prompts, MMLU in 5 folds of whole subjects (`domain`),
RouteLLM's APGR over the decile thresholds of the scores.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy scipy scikit-learn
    /tmp/venv/bin/python scripts/routing-baselines.py ../shared/routing

Models: length only; logistic regression predicting the cheap tier's
success from TF-IDF word uni/bigrams plus dense length and number features
(score = its failure probability); ridge regression of the benefit (strong
minus cheap outcome) on the same features.
"""
import json
import re
import sys
from collections import defaultdict

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold, KFold


def load(path):
    by_prompt, domain = defaultdict(dict), {}
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        by_prompt[r["prompt"]][r["tier"]] = r["score"]
        domain[r["prompt"]] = r.get("domain", "")
    prompts = [p for p, t in by_prompt.items() if "low" in t and "high" in t]
    weak = np.array([by_prompt[p]["low"] for p in prompts])
    strong = np.array([by_prompt[p]["high"] for p in prompts])
    return prompts, weak, strong, np.array([domain[p] for p in prompts])


def apgr(score, weak, strong):
    w, s = weak.mean(), strong.mean()
    points = []
    for t in np.percentile(score, np.linspace(0, 100, 11)):
        to_strong = score >= t
        quality = np.where(to_strong, strong, weak).mean()
        points.append((to_strong.mean(), (quality - w) / (s - w)))
    points.sort()
    xs = np.array([0.0] + [p[0] for p in points] + [1.0])
    ys = np.array([0.0] + [p[1] for p in points] + [1.0])
    return float(np.trapezoid(ys, xs))


def dense(prompts):
    rows = []
    for p in prompts:
        numbers = re.findall(r"\d+(?:\.\d+)?", p)
        rows.append([np.log1p(len(p)), np.log1p(len(p.split())), len(numbers), p.count("\n"), p.count("?")])
    return np.array(rows, dtype=float)


def evaluate(name, prompts, weak, strong, groups, by_group):
    folds = GroupKFold(5) if by_group else KFold(5, shuffle=True, random_state=0)
    results = defaultdict(list)
    for train, test in folds.split(prompts, groups=groups if by_group else None):
        p_train = [prompts[i] for i in train]
        p_test = [prompts[i] for i in test]
        tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        d_train, d_test = dense(p_train), dense(p_test)
        mu, sd = d_train.mean(0), d_train.std(0) + 1e-9
        x_train = hstack([tfidf.fit_transform(p_train), csr_matrix((d_train - mu) / sd)]).tocsr()
        x_test = hstack([tfidf.transform(p_test), csr_matrix((d_test - mu) / sd)]).tocsr()
        w, s = weak[test], strong[test]
        results["length only"].append(apgr(np.array([len(p) for p in p_test], dtype=float), w, s))
        logistic = LogisticRegression(C=0.3, max_iter=2000).fit(x_train, weak[train])
        results["logistic, cheap tier fails"].append(apgr(-logistic.predict_proba(x_test)[:, 1], w, s))
        ridge = Ridge(alpha=10.0).fit(x_train, strong[train] - weak[train])
        results["ridge, benefit"].append(apgr(ridge.predict(x_test), w, s))
    for model, values in results.items():
        print(f"{name:6} {model:28} {np.mean(values):.3f}")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "../shared/routing"
    for file, by_group in [("gsm8k_train.jsonl", False), ("mmlu_train.jsonl", True)]:
        prompts, weak, strong, groups = load(f"{root}/{file}")
        evaluate(file.split("_")[0], prompts, weak, strong, groups, by_group)


if __name__ == "__main__":
    main()
