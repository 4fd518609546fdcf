#!/usr/bin/env python3
"""PyTorch + transformers + peft reference for lightpeft's step timer.

Runs the same steps as `cargo run --release -p lightpeft-engine --example step_bench` (CPU) and
`lightpeft device-check steps` (any device): the same checkpoint, plan (heads and FFN neurons
physically removed, LoRA modules and ranks), batch, length, thread count and kind of random
token ids, and prints one JSON line with the median time.

    python bench/torch_reference.py --model DIR --plan full --batch 16 --len 64 --threads 2 \
        [--mode train|infer] [--steps 10] [--targets all|qv] [--device cpu|cuda]

Plans (the same definitions as lightpeft_engine::bench::StepPlan), on any BERT or RoBERTa:
  full   every head and neuron, LoRA r=8 on every target linear of every layer
  third  a third of each layer's heads and neurons removed, LoRA r=8 everywhere
  paper  a third removed, LoRA r=4 on a quarter of the modules
  half   half removed, LoRA r=4 on a quarter of the modules
"Removed" counts by NumPy's quantile on distinct scores, as the planner does: a ratio of
0.333333333 removes 4 of 12 heads (MiniLM) and 5 of 16 (RoBERTa-large). A quarter of the
modules: module number layer*6 + kind divisible by 4, kind in query, key, value, attention
output, intermediate, output order. Which heads and neurons are kept does not change the
cost, so the first ones are.

Exits with status 3 and a JSON line {"error": ...} when torch, transformers or peft are missing.
"""

import argparse
import json
import resource
import statistics
import sys
import time

KINDS = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]

THIRD = 0.333333333

# (head and neuron pruning ratio, LoRA rank, which modules carry LoRA) per plan.
PLANS = {
    "full": (0.0, 8, lambda index: True),
    "third": (THIRD, 8, lambda index: True),
    "paper": (THIRD, 4, lambda index: index % 4 == 0),
    "half": (0.5, 4, lambda index: index % 4 == 0),
}

# LoRA's targets before the plan: indices into KINDS.
TARGETS = {"all": range(6), "qv": (0, 2)}


def kept(n, ratio):
    """Units left of n after the planner's rule removes those scored at or below the quantile."""
    if ratio == 0 or n == 0:
        return n
    import numpy

    scores = numpy.arange(n, dtype=numpy.float64)
    return int((scores > numpy.quantile(scores, ratio)).sum())


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--plan", choices=sorted(PLANS), default="full")
    p.add_argument("--targets", choices=sorted(TARGETS), default="all")
    p.add_argument("--mode", choices=["train", "infer"], default="train")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--len", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return p.parse_args()


def keep_rows(linear, rows):
    """The first `rows` outputs of `linear`."""
    import torch

    kept = torch.nn.Linear(linear.in_features, rows)
    kept.weight.copy_(linear.weight[:rows])
    kept.bias.copy_(linear.bias[:rows])
    return kept


def keep_columns(linear, cols):
    """`linear` reading only its first `cols` inputs."""
    import torch

    kept = torch.nn.Linear(cols, linear.out_features)
    kept.weight.copy_(linear.weight[:, :cols])
    kept.bias.copy_(linear.bias)
    return kept


def build_model(model_dir, plan, targets):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    ratio, rank, carries = PLANS[plan]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    config = model.config
    prefix = model.base_model_prefix
    layers = model.base_model.encoder.layer
    head_dim = config.hidden_size // config.num_attention_heads
    heads = kept(config.num_attention_heads, ratio)
    neurons = kept(config.intermediate_size, ratio)
    with torch.no_grad():
        for layer in layers:
            attn = layer.attention
            # transformers 5 has no prune_heads; its attention infers the head count from
            # the projections' width, so slicing them is enough.
            for name in ("query", "key", "value"):
                setattr(attn.self, name, keep_rows(getattr(attn.self, name), heads * head_dim))
            attn.output.dense = keep_columns(attn.output.dense, heads * head_dim)
            layer.intermediate.dense = keep_rows(layer.intermediate.dense, neurons)
            layer.output.dense = keep_columns(layer.output.dense, neurons)
    wrapped = [
        f"{prefix}.encoder.layer.{l}.{kind}"
        for l in range(len(layers))
        for k, kind in enumerate(KINDS)
        if k in TARGETS[targets] and carries(l * len(KINDS) + k)
    ]
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules=wrapped,
        modules_to_save=["classifier"],
    )
    return get_peft_model(model, lora)


def main():
    args = parse_args()
    try:
        import torch
        import transformers  # noqa: F401
        import peft  # noqa: F401
    except ImportError as e:
        print(json.dumps({"error": f"PyTorch reference unavailable: {e}"}))
        sys.exit(3)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model = build_model(args.model, args.plan, args.targets).to(device)
    # Random word ids, one special id first and last, no padding (as lightpeft's synthetic
    # batch: the ids do not change the cost).
    vocab = model.config.vocab_size
    ids = torch.randint(max(vocab // 10, 1), max(vocab - 1, 2), (args.batch, args.len))
    ids[:, 0], ids[:, -1] = 0, vocab - 1
    ids = ids.to(device)
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    labels = (torch.arange(args.batch) % 2).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=3e-4, weight_decay=0.0)

    def train_step():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer_step():
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, token_type_ids=types)

    if args.mode == "train":
        model.train()
        step = train_step
    else:
        model.eval()
        step = infer_step
    times = []
    for i in range(args.steps + 1):  # one warm-up step, not counted
        if i == 1 and cuda:
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        step()
        if cuda:  # kernels are queued: the step ends when the device has run them
            torch.cuda.synchronize(device)
        if i > 0:
            times.append(time.perf_counter() - start)
    record = {
        "impl": "pytorch",
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}",
        "device": args.device,
        "plan": args.plan,
        "targets": args.targets,
        "mode": args.mode,
        "batch": args.batch,
        "len": args.len,
        "threads": torch.get_num_threads(),
        "trainable": sum(p.numel() for p in trainable),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if cuda:
        record["peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(record))


if __name__ == "__main__":
    main()
