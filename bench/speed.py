#!/usr/bin/env python3
"""lightpeft's trainer against PyTorch + transformers + peft, side by side in one run.

    python3 bench/speed.py [--model DIR] [--threads 2] [--steps 10] [--python PYTHON]
        [--shapes 16x64,32x128] [--plans full,third,half] [--modes train,infer]

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
                results[(mode, shape, plan)] = (ours, torch)
                show = lambda r: f"{r[args.stat]:.3f} s" if r else "n/a"  # noqa: E731
                print(f"{mode} {shape} {plan}: ours {show(ours)}, PyTorch {show(torch)}",
                      file=sys.stderr)
    if args.records:
        with open(args.records, "w") as f:
            for r in (r for pair in results.values() for r in pair if r):
                f.write(json.dumps(r) + "\n")
    versions = next((t["versions"] for o, t in results.values() if t), "PyTorch not available")
    stat = "median" if args.stat == "median_s" else "fastest"
    print(f"\n{args.threads} threads, {stat} of {args.steps} steps after one warm-up; {versions}\n")
    print("| mode | batch × len | plan | ours s/step | PyTorch s/step | ours / PyTorch "
          "| speed-up vs full: ours | PyTorch | peak RSS MiB: ours | PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (mode, shape, plan), (ours, torch) in results.items():
        base_ours, base_torch = results.get((mode, shape, "full"), (None, None))

        def cell(r, key=args.stat, fmt="{:.3f}"):
            return fmt.format(r[key]) if r else "n/a"

        def speedup(base, r):
            return f"{base[args.stat] / r[args.stat]:.2f}×" if base and r else "n/a"

        ratio = f"{ours[args.stat] / torch[args.stat]:.2f}" if ours and torch else "n/a"
        print(
            f"| {mode} | {shape.replace('x', ' × ')} | {plan} | {cell(ours)} | {cell(torch)} "
            f"| {ratio} | {speedup(base_ours, ours)} | {speedup(base_torch, torch)} "
            f"| {cell(ours, 'peak_rss_mib', '{:.0f}')} | {cell(torch, 'peak_rss_mib', '{:.0f}')} |"
        )


if __name__ == "__main__":
    main()
