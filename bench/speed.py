#!/usr/bin/env python3
"""lightpeft's trainer against PyTorch + transformers + peft, side by side in one run.

    python3 bench/speed.py [--model DIR] [--threads 2] [--steps 10] [--rounds 1]
        [--python PYTHON] [--shapes 16x64,32x128] [--plans full,third,half] [--modes train,infer]

Builds `step_bench` (release), then for every configuration runs ours and
`bench/torch_reference.py` one after the other, each in a fresh process (so that peak memory is
per configuration), and prints a markdown table: median seconds per step, the ratio ours /
PyTorch, each side's speed-up and memory saving of a pruned plan over its own `full` plan.
Without PyTorch (CI) the PyTorch columns read "n/a". `--python` picks the interpreter that has
torch (default: this one).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    data = os.environ.get("LIGHTPEFT_DATA_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME", os.path.expanduser("~/.local/share")), "lightpeft"
    )
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(data, "models", "all-MiniLM-L6-v2"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--shapes", default="16x64,32x128")
    p.add_argument("--plans", default="full,third,half")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--records", help="also write every run's JSON record to this file")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the whole matrix this many times and report medians over rounds, with the "
        "range of each ratio (a shared machine's speed drifts by tens of percent over minutes)",
    )
    p.add_argument(
        "--stat",
        choices=["median_s", "min_s"],
        default="median_s",
        help="which per-step time the table compares: the median, or the fastest step (the one "
        "other processes disturbed least, on a shared machine)",
    )
    return p.parse_args()


def run_json(cmd, env):
    """The last JSON line a command printed, or None (with its error) if it failed."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    record = json.loads(lines[-1]) if lines else None
    if proc.returncode != 0 or record is None or "error" in record:
        why = (record or {}).get("error") or proc.stderr.strip().splitlines()[-1:]
        print(f"  {' '.join(cmd[:2])}…: failed ({why})", file=sys.stderr)
        return None
    return record


def build(env):
    target = Path(env.get("CARGO_TARGET_DIR", ROOT / "target"))
    subprocess.run(
        ["cargo", "build", "--release", "-p", "lightpeft-engine", "--example", "step_bench"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return target / "release" / "examples" / "step_bench"


def main():
    args = parse_args()
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(args.threads)
    env["OMP_NUM_THREADS"] = str(args.threads)
    binary = build(env)
    results = {}
    # Rounds run the whole matrix again, so every configuration is measured at several times of
    # a shared machine's load; ours and PyTorch always run back to back within a round.
    for round_index in range(args.rounds):
        for mode in args.modes.split(","):
            for shape in args.shapes.split(","):
                batch, length = shape.split("x")
                for plan in args.plans.split(","):
                    common = ["--batch", batch, "--len", length, "--steps", str(args.steps)]
                    common += ["--plan", plan, "--mode", mode, "--model", args.model]
                    ours = run_json([str(binary), *common, "--json"], env)
                    torch = run_json(
                        [args.python, str(ROOT / "bench" / "torch_reference.py"), *common,
                         "--threads", str(args.threads)],
                        env,
                    )
                    results.setdefault((mode, shape, plan), []).append((ours, torch))
                    show = lambda r: f"{r[args.stat]:.3f} s" if r else "n/a"  # noqa: E731
                    print(f"round {round_index + 1}: {mode} {shape} {plan}: ours {show(ours)}, "
                          f"PyTorch {show(torch)}", file=sys.stderr)
    if args.records:
        with open(args.records, "w") as f:
            for key, rounds in results.items():
                for round_index, pair in enumerate(rounds):
                    for r in (r for r in pair if r):
                        f.write(json.dumps({**r, "round": round_index + 1}) + "\n")
    versions = next(
        (t["versions"] for rounds in results.values() for _, t in rounds if t),
        "PyTorch not available",
    )
    stat = "median" if args.stat == "median_s" else "fastest"
    print(f"\n{args.threads} threads, {stat} of {args.steps} steps after one warm-up, "
          f"{args.rounds} round(s); {versions}\n")
    if args.rounds > 1:
        print("Each cell: the median over rounds; ratios and speed-ups are taken within a round "
              "(runs minutes apart at most) and their range over rounds follows in brackets.\n")
    print("| mode | batch × len | plan | ours s/step | PyTorch s/step | ours / PyTorch "
          "| speed-up vs full: ours | PyTorch | peak RSS MiB: ours | PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (mode, shape, plan), rounds in results.items():
        base = results.get((mode, shape, "full"), [])

        def times(side):
            return [pair[side][args.stat] for pair in rounds if pair[side]]

        def ratios(num, den):
            """Per-round num/den for the rounds where both ran."""
            return [n / d for n, d in zip(num, den) if n is not None and d is not None]

        def per_round(side, rows):
            return [pair[side][args.stat] if pair[side] else None for pair in rows]

        ratio = summary(ratios(per_round(0, rounds), per_round(1, rounds)), args.rounds)
        speedups = [
            summary(ratios(per_round(side, base), per_round(side, rounds)), args.rounds, "×")
            for side in (0, 1)
        ]
        rss = [
            max((pair[side]["peak_rss_mib"] for pair in rounds if pair[side]), default=None)
            for side in (0, 1)
        ]
        print(
            f"| {mode} | {shape.replace('x', ' × ')} | {plan} | {median_cell(times(0))} "
            f"| {median_cell(times(1))} | {ratio} | {speedups[0]} | {speedups[1]} "
            f"| {fmt_rss(rss[0])} | {fmt_rss(rss[1])} |"
        )


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def median_cell(values):
    return f"{median(values):.3f}" if values else "n/a"


def summary(values, rounds, unit=""):
    """The median, with the range over rounds in brackets when there were several."""
    if not values:
        return "n/a"
    text = f"{median(values):.2f}{unit}"
    if rounds > 1:
        text += f" ({min(values):.2f}–{max(values):.2f})"
    return text


def fmt_rss(value):
    return f"{value:.0f}" if value is not None else "n/a"

if __name__ == "__main__":
    main()
