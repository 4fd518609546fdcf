#!/usr/bin/env python3
"""PyTorch + transformers + peft reference for lightpeft's step timer.

Runs the same steps as `cargo run --release -p lightpeft-engine --example step_bench`: the same
checkpoint, plan (heads and FFN neurons physically removed, LoRA modules and ranks), batch,
length, thread count and random token ids, and prints one JSON line with the median time.

    python bench/torch_reference.py --model DIR --plan full --batch 16 --len 64 --threads 2 \
        [--mode train|infer] [--steps 10]

Plans (the same definitions as step_bench's `--plan`):
  full   all 12 heads and 1536 neurons per layer, LoRA r=8 on all six linears of every layer
  third  the first 8 heads and 1024 neurons kept per layer, LoRA r=8 everywhere
  half   the first 6 heads and 768 neurons kept per layer, LoRA r=4 on a quarter of the
         modules (module number layer*6 + kind, kind in query, key, value, attention output,
         intermediate, output order, divisible by 4)
Which heads and neurons are kept does not change the cost, so the first ones are.

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

# (heads kept, neurons kept, LoRA rank, which modules carry LoRA) per plan.
PLANS = {
    "full": (12, 1536, 8, lambda index: True),
    "third": (8, 1024, 8, lambda index: True),
    "half": (6, 768, 4, lambda index: index % 4 == 0),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--plan", choices=sorted(PLANS), default="full")
    p.add_argument("--mode", choices=["train", "infer"], default="train")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--len", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
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


def build_model(model_dir, plan):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification

    heads, neurons, rank, carries = PLANS[plan]
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    config = model.config
    layers = model.bert.encoder.layer
    head_dim = config.hidden_size // config.num_attention_heads
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
    targets = [
        f"bert.encoder.layer.{l}.{kind}"
        for l in range(len(layers))
        for k, kind in enumerate(KINDS)
        if carries(l * len(KINDS) + k)
    ]
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules=targets,
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
    model = build_model(args.model, args.plan)
    # Random ids in the vocabulary's word range with [CLS] first and [SEP] last, no padding.
    ids = torch.randint(1000, 30000, (args.batch, args.len))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    labels = torch.arange(args.batch) % 2
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
        start = time.perf_counter()
        step()
        if i > 0:
            times.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}",
                "plan": args.plan,
                "mode": args.mode,
                "batch": args.batch,
                "len": args.len,
                "threads": torch.get_num_threads(),
                "trainable": sum(p.numel() for p in trainable),
                "median_s": statistics.median(times),
                "min_s": min(times),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
