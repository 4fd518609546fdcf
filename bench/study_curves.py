#!/usr/bin/env python3
"""A study's per-epoch dev scores: for each configuration, the mean over its seeds of the dev
score after each epoch, from a running lightpeft server's REST API.

    python3 bench/study_curves.py [--server http://127.0.0.1:8080] STUDY_ID

Prints a markdown table (one row per configuration, one column per epoch, percentages for
accuracy and F1, the score itself for correlations), so a study's table can say whether a
configuration was still climbing when its epochs ran out.
"""

import argparse
import json
import os
import statistics
import urllib.request


def get(server, path):
    request = urllib.request.Request(f"{server}/api/v1{path}")
    token = os.environ.get("LIGHTPEFT_TOKEN")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", default="http://127.0.0.1:8080")
    p.add_argument("study", type=int)
    args = p.parse_args()
    report = get(args.server, f"/studies/{args.study}")
    metric = report.get("metric") or "score"
    percent = metric in ("accuracy", "f1", "exact_match")
    curves = []
    for configuration in report["configurations"]:
        per_epoch = {}
        for job in configuration["job_ids"]:
            for record in get(args.server, f"/jobs/{job}/evals"):
                value = dict(record["metrics"]).get(metric)
                if value is not None:
                    per_epoch.setdefault(record["epoch"], []).append(value)
        curves.append((configuration["label"], per_epoch))
    epochs = sorted({e for _, per_epoch in curves for e in per_epoch})
    print(f"Study {args.study}: dev {metric} after each epoch, mean over seeds (seeds counted)\n")
    print("| configuration | " + " | ".join(f"epoch {e + 1}" for e in epochs) + " |")
    print("|---|" + "---|" * len(epochs))
    for label, per_epoch in curves:
        cells = []
        for e in epochs:
            values = per_epoch.get(e, [])
            if not values:
                cells.append("–")
                continue
            mean = statistics.mean(values)
            shown = f"{mean * 100:.1f} %" if percent else f"{mean:.3f}"
            cells.append(f"{shown} ({len(values)})")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
