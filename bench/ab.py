#!/usr/bin/env python3
"""Two or more `step_bench` builds (or settings) side by side, alternating, round after round.

    python3 bench/ab.py --build old=/tmp/step_bench_old --build new=target/release/examples/step_bench \
        [--build "new, 1 s hold=target/release/examples/step_bench --hold-freed-ms 1000"] \
        [--modes lora,estimate,train,infer] [--shapes 16x64] [--steps 5] [--rounds 3] [--threads 2]

A change to the engine is measured by building `step_bench` before and after it (copy the
first binary aside) and running both here: within a round every build runs each configuration
once, in a fresh process, one after the other, so that the machine's drift over minutes falls
on all of them alike. The table has each build's median seconds per step (over its steps,
after one warm-up) per round, each build's ratio to the first one within the round, the
median of those ratios over rounds, and each build's peak RSS. The first round also warms the
machine; its ratios are printed but not trusted more than the others.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--build",
        action="append",
        required=True,
        help="NAME=BINARY [ARGS...]: a step_bench binary and extra arguments; the first is the baseline",
    )
    p.add_argument("--modes", default="lora,estimate,train,infer")
    p.add_argument("--shapes", default="16x64")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", help="model directory (default: step_bench's, the bundled MiniLM)")
    return p.parse_args()


def run(command, args, mode, batch, length):
    cmd = command + ["--mode", mode, "--batch", str(batch), "--len", str(length)]
    cmd += ["--steps", str(args.steps), "--json"]
    if args.model:
        cmd += ["--model", args.model]
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    args = parse_args()
    builds = []
    for spec in args.build:
        name, _, command = spec.partition("=")
        if not command:
            raise SystemExit(f"--build {spec!r}: expected NAME=BINARY [ARGS...]")
        builds.append((name, shlex.split(command)))
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    configs = [(m, b, l) for (b, l) in shapes for m in args.modes.split(",")]
    # seconds[config][build] = list over rounds; rss likewise (last round kept).
    seconds = {c: {name: [] for name, _ in builds} for c in configs}
    rss = {c: {} for c in configs}
    for round_index in range(args.rounds):
        for config in configs:
            for name, command in builds:
                record = run(command, args, *config)
                seconds[config][name].append(record["median_s"])
                rss[config][name] = record["peak_rss_mib"]
        print(f"round {round_index + 1} of {args.rounds} done", flush=True)
    base = builds[0][0]
    print()
    print(
        f"{args.threads} threads, median of {args.steps} steps after one warm-up per run, "
        f"{args.rounds} rounds, builds alternating within each round; ratios are to `{base}` "
        "within a round"
    )
    print()
    names = [name for name, _ in builds]
    header = ["mode", "batch × len", "round"] + [f"{n} s/step" for n in names]
    header += [f"{n} / {base}" for n in names[1:]] + [f"peak RSS MiB: {n}" for n in names]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for config in configs:
        mode, batch, length = config
        for r in range(args.rounds):
            row = [mode, f"{batch} × {length}", str(r + 1)]
            row += [f"{seconds[config][n][r]:.3f}" for n in names]
            row += [f"{seconds[config][n][r] / seconds[config][base][r]:.2f}" for n in names[1:]]
            row += [f"{rss[config][n]:.0f}" if r == 0 else "" for n in names]
            print("| " + " | ".join(row) + " |")
        medians = [
            statistics.median(a / b for a, b in zip(seconds[config][n], seconds[config][base]))
            for n in names[1:]
        ]
        row = [mode, f"{batch} × {length}", "median"] + [
            f"{statistics.median(seconds[config][n]):.3f}" for n in names
        ]
        row += [f"**{m:.2f}**" for m in medians] + ["" for _ in names]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
