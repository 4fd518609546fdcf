#!/usr/bin/env python3
"""lightpeft's trainer against PyTorch + transformers + peft, side by side in one run.

    python3 bench/speed.py [--model DIR] [--threads 2] [--steps 10] [--rounds 1]
        [--python PYTHON] [--shapes 16x64,32x128] [--plans full,third,half] [--modes train,infer]

Builds `step_bench` (release), then for every configuration runs ours and
`bench/torch_reference.py` one after the other, each in a fresh process (so that peak memory is
per configuration), and prints a markdown table: median seconds per step, the ratio ours /
PyTorch, each side's speed-up and memory saving of a pruned plan over its own `full` plan, and
each side's GFLOP/s (FLOPs counted from the shapes, below) with ours as a share of the
machine's practical peak, the best rate of a 2048 × 2048 f32 product measured in the same
round on the same threads (the nominal peak is printed too). A second table times the
trainer's estimation step against its plain LoRA step on the same batches, with and without
writing the per-step records as the CLI does.
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
        "--estimation",
        default="lora,estimate,estimate-record",
        help="trainer rows per shape (empty: none): the plain LoRA step, the estimation step, "
        "and the estimation step that also writes its records",
    )
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


THIRD = 0.333333333
# (head and neuron ratio removed, LoRA rank, every how many modules keep LoRA), as in
# lightpeft_engine::bench::StepPlan and bench/torch_reference.py.
PLANS = {"full": (0.0, 8, 1), "third": (THIRD, 8, 1), "paper": (THIRD, 4, 4), "half": (0.5, 4, 4)}


def kept(n, ratio):
    """Units kept of n: the planner's quantile rule on distinct scores removes floor((n-1)r)+1."""
    return n if ratio == 0 or n == 0 else n - (int((n - 1) * ratio) + 1)


def step_gflop(model_dir, mode, batch, length, plan, first_token=False, ratio_pass=False):
    """FLOPs of one step, counted from the shapes (a multiply-add is 2): the encoder's products
    (Q, K, V, attention output, FFN in and out, QKᵀ and PV) and the LoRA branches. A training step
    adds the backward pass: frozen weights need only the input gradient (the forward's FLOPs
    again), the attention products and LoRA need both operands' gradients (twice theirs).
    Element-wise work (softmax, LayerNorm, GELU, masks) is not counted.

    `first_token`: the last layer computes its queries, attention output and feed-forward for the
    first token alone, keys and values over the sequence (ours: the head reads nothing else).
    `ratio_pass`: a training step also runs the last layer forwards over every position (ours,
    the estimation step's pass for §4.1's ratios)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, inner = config["num_attention_heads"], config["intermediate_size"]
    ratio, rank, every = PLANS[plan]
    head_dim = hidden // heads
    attn = kept(heads, ratio) * head_dim
    ffn = kept(inner, ratio)
    tokens = batch * length

    def layer(index, rows, queries):
        """(products, attention products, LoRA) of layer `index` computing `rows` outputs."""
        linear = 2 * (rows * hidden * attn + 2 * tokens * hidden * attn + rows * attn * hidden
                      + 2 * rows * hidden * ffn)
        products = 2 * 2 * batch * queries * length * attn
        # LoRA modules (rows, in, out): query, key, value, attention output, FFN in, FFN out.
        modules = [(rows, hidden, attn), (tokens, hidden, attn), (tokens, hidden, attn),
                   (rows, attn, hidden), (rows, hidden, ffn), (rows, ffn, hidden)]
        lora = sum(2 * n * rank * (i + o) for k, (n, i, o) in enumerate(modules)
                   if (index * len(modules) + k) % every == 0)
        return linear, products, lora

    forward = attention = branches = 0
    for index in range(layers):
        alone = first_token and index == layers - 1
        linear, products, lora = layer(index, batch if alone else tokens, 1 if alone else length)
        forward += linear + products + lora
        attention += products
        branches += lora
    if mode == "infer":
        return forward / 1e9
    total = 2 * forward + attention + 2 * branches
    if ratio_pass:
        total += sum(layer(layers - 1, tokens, length))
    return total / 1e9


def nominal_peak(threads):
    """Nominal fp32 peak of `threads` cores: clock × 32 FLOPs per cycle (two 8-lane FMA units,
    AVX2), with the clock /proc/cpuinfo reports; None when it cannot be read."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(l.split(":")[1]) for l in info.splitlines() if l.startswith("cpu MHz")]
    flags = next((l for l in info.splitlines() if l.startswith("flags")), "")
    if not mhz or " fma" not in flags or " avx2" not in flags:
        return None
    return threads * max(mhz) / 1e3 * 32


def main():
    args = parse_args()
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(args.threads)
    env["OMP_NUM_THREADS"] = str(args.threads)
    binary = build(env)
    results = {}
    trainer = {}
    peaks = []
    # Rounds run the whole matrix again, so every configuration is measured at several times of
    # a shared machine's load; ours and PyTorch always run back to back within a round.
    for round_index in range(args.rounds):
        peak = run_json([str(binary), "--mode", "peak", "--json"], env)
        peaks.append(peak["gflops"] if peak else None)
        for shape in filter(None, args.shapes.split(",") if args.estimation else []):
            batch, length = shape.split("x")
            for row in args.estimation.split(","):
                mode, _, record = row.partition("-")
                cmd = [str(binary), "--batch", batch, "--len", length, "--steps", str(args.steps),
                       "--mode", mode, "--model", args.model, "--json"]
                result = run_json(cmd + (["--record"] if record else []), env)
                trainer.setdefault((shape, row), []).append(result)
                print(f"round {round_index + 1}: trainer {row} {shape}: "
                      f"{result[args.stat]:.3f} s" if result else "failed", file=sys.stderr)
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
    measured = [p for p in peaks if p]
    nominal = nominal_peak(args.threads)
    print(f"Practical peak: {median_cell(measured, 1)} GFLOP/s, the best 2048 × 2048 f32 product "
          f"(candle's gemm, {args.threads} threads, median over rounds); nominal "
          + (f"{nominal:.0f} GFLOP/s (clock × {args.threads} cores × 32 FLOPs per cycle, AVX2 FMA)"
             if nominal else "unknown") + ".\n")
    print("| mode | batch × len | plan | GFLOP: ours | PyTorch | ours s/step | PyTorch s/step "
          "| ours / PyTorch "
          "| GFLOP/s: ours | PyTorch | ours / practical peak "
          "| speed-up vs full: ours | PyTorch | peak RSS MiB: ours | PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
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
        batch, length = (int(v) for v in shape.split("x"))
        gflops = [step_gflop(args.model, mode, batch, length, plan, first_token=True),
                  step_gflop(args.model, mode, batch, length, plan)]
        rates = [[gflops[side] / t for t in times(side)] for side in (0, 1)]
        shares = ratios([gflops[0] / t if t else None for t in per_round(0, rounds)], peaks)
        speedups = [
            summary(ratios(per_round(side, base), per_round(side, rounds)), args.rounds, "×")
            for side in (0, 1)
        ]
        rss = [
            max((pair[side]["peak_rss_mib"] for pair in rounds if pair[side]), default=None)
            for side in (0, 1)
        ]
        print(
            f"| {mode} | {shape.replace('x', ' × ')} | {plan} | {gflops[0]:.1f} | {gflops[1]:.1f} "
            f"| {median_cell(times(0))} "
            f"| {median_cell(times(1))} | {ratio} | {median_cell(rates[0], 1)} "
            f"| {median_cell(rates[1], 1)} | {percent(shares, args.rounds)} "
            f"| {speedups[0]} | {speedups[1]} | {fmt_rss(rss[0])} | {fmt_rss(rss[1])} |"
        )
    if trainer:
        print("\nThe trainer's own steps (what `lightpeft estimate` and `lightpeft baseline` run per "
              "batch), LoRA on every target, same batches; ratios within a round:\n")
        print("| batch × len | step | ours s/step | vs plain LoRA step | GFLOP/s | peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        names = {"lora": "plain LoRA step", "estimate": "estimation step",
                 "estimate-record": "estimation step + JSON records"}
        for (shape, row), rounds in trainer.items():
            base = trainer.get((shape, "lora"), [])
            batch, length = (int(v) for v in shape.split("x"))
            gflop = step_gflop(args.model, "train", batch, length, "full", first_token=True,
                               ratio_pass=row.startswith("estimate"))
            secs = [r[args.stat] if r else None for r in rounds]
            vs = ratios(secs, [r[args.stat] if r else None for r in base])
            done = [t for t in secs if t]
            rss = max((r["peak_rss_mib"] for r in rounds if r), default=None)
            print(f"| {shape.replace('x', ' × ')} | {names.get(row, row)} | {median_cell(done)} "
                  f"| {summary(vs, args.rounds, '×')} | {median_cell([gflop / t for t in done], 1)} "
                  f"| {fmt_rss(rss)} |")


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def median_cell(values, digits=3):
    return f"{median(values):.{digits}f}" if values else "n/a"


def percent(values, rounds):
    """Shares as percentages: the median, with the range over rounds when there were several."""
    if not values:
        return "n/a"
    text = f"{median(values) * 100:.0f} %"
    if rounds > 1:
        text += f" ({min(values) * 100:.0f}–{max(values) * 100:.0f})"
    return text


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
