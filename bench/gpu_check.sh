#!/usr/bin/env bash
# One prepared run for a GPU machine (minutes of scarce device time): CPU/GPU parity, the
# step-time table at RoBERTa-large's shapes next to PyTorch + peft on the same GPU, and one
# short estimation and fine-tuning through the CLI's --device. Never run by CI.
#
#   bash bench/gpu_check.sh [--binary target-cuda/lightpeft-cuda.xz] [--out DIR] [--device cuda]
#                           [--python PYTHON] [--steps 10] [--small]
#
# The binary comes from scripts/cuda-build.sh (built on a CPU machine and carried, xz-compressed
# since candle's linked GPU code makes it larger than a run may carry; unpacked here). --small
# times a 2-layer model instead of RoBERTa-large and --device cpu runs everything on the CPU:
# together they try this script on a machine without a GPU. Results land in --out (default
# $OUT, else ./gpu-check): parity-*.json, steps.jsonl, e2e-*.json, table.md, log.txt.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
binary=$here/target-cuda/lightpeft-cuda.xz
out=${OUT:-$here/gpu-check}
device=cuda
python=python3
steps=10
small=0
while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --small) small=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
started=$(date +%s)
say() { printf '[%4ss] %s\n' $(( $(date +%s) - started )) "$*"; }

data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
case $binary in
    *.xz)
        "$python" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$binary" "$data/lightpeft"
        chmod +x "$data/lightpeft"
        binary=$data/lightpeft
        ;;
esac

# --- The machine and its libraries ------------------------------------------------------
# A CUDA build links libcuda.so.1, libcublas(Lt).so.13, libcurand.so.10, libnvrtc.so.13 and
# libcudart.so.13 by name; find them where a GPU image keeps them (the driver's folder, a CUDA
# 13 toolkit, the wheels of the Python that has torch) before the first run.
if [ "$device" != cpu ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
    extra=""
    for dir in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/local/cuda-13.0/lib64 \
               /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$dir" ] && extra=$extra:$dir
    done
    wheels=$("$python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
    [ -n "$wheels" ] && [ -d "$wheels" ] && extra=$wheels$extra
    for dir in $("$python" -c 'import nvidia, os, glob; p = list(nvidia.__path__)[0]; print(" ".join(sorted(set(os.path.dirname(f) for f in glob.glob(p + "/*/lib/lib*.so*")))))' 2>/dev/null || true); do
        extra=$extra:$dir
    done
    export LD_LIBRARY_PATH=${extra#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$binary" | grep -E 'cuda|cublas|curand|nvrtc|not found' || true
fi
"$binary" --version
lp() { "$binary" --data-dir "$data" "$@"; }

# --- Models -----------------------------------------------------------------------------
# Random weights: MiniLM's checkpoint (90 MB) is more than a run may carry, and parity and
# speed depend on the shapes, not on what the weights learned.
say "writing models"
lp assets tiny --name tiny-bert >/dev/null
lp assets tiny --name minilm-shape --layers 6 --heads 12 --head-dim 32 --ffn 1536 --max-positions 512 >/dev/null
if [ "$small" = 1 ]; then
    lp assets tiny --name large --arch roberta --layers 2 --heads 4 --head-dim 64 --ffn 1024 --max-positions 512 >/dev/null
    shape=(--batch 4 --len 32)
else
    # RoBERTa-large: 24 layers, 16 heads of 64, hidden 1024, FFN 4096 (1.2 GB in f32).
    lp assets tiny --name large --arch roberta --layers 24 --heads 16 --head-dim 64 --ffn 4096 --max-positions 512 >/dev/null
    shape=(--batch 32 --len 128)
fi

# --- Parity -----------------------------------------------------------------------------
status=0
for model in tiny-bert minilm-shape; do
    for size in "4 32" "8 128"; do
        set -- $size
        say "parity $model batch $1 len $2"
        if ! lp device-check parity --model "$model" --device "$device" --batch "$1" --len "$2" \
                --json > "$out/parity-$model-$1x$2.json"; then
            status=1
        fi
        "$python" - "$out/parity-$model-$1x$2.json" <<'EOF' || true
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  logits {r['logits_max_abs']:.2e}, ratios {r['ratios_max_abs']:.2e}, worst gradient "
      f"{r['worst_gradient'][1]:.2e} ({r['worst_gradient'][0]}), within limits: {r['within_limits']}")
EOF
    done
done

# --- Step times -------------------------------------------------------------------------
# Device memory in use, sampled every 50 ms while a row runs; its peak less the idle level.
[ "$device" = cuda ] && device_index=0 || device_index=${device#cuda:}
gpu_mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$device_index" 2>/dev/null | head -1; }
sampled_row() {
    local log=$1; shift
    if [ "$device" = cpu ]; then
        "$@"
        return
    fi
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$device_index" -lms 50 > "$log" &
    local sampler=$!
    "$@" || { kill $sampler; return 1; }
    kill $sampler; wait $sampler 2>/dev/null || true
}
torch_ok=0
if "$python" -c 'import torch, transformers, peft' 2>/dev/null; then torch_ok=1; fi
say "PyTorch side: $([ $torch_ok = 1 ] && "$python" -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' || echo 'not available')"
: > "$out/steps.jsonl"
idle=$( [ "$device" = cpu ] && echo 0 || gpu_mem )
for row in "vanilla-qv full qv" "vanilla-all full all" "light-peft-paper paper all" "light-peft-half half all"; do
    set -- $row
    name=$1 plan=$2 targets=$3
    say "steps $name (plan $plan, targets $targets)"
    if sampled_row "$out/mem-ours-$name.log" lp device-check steps --model large --device "$device" \
            --plan "$plan" --targets "$targets" "${shape[@]}" --steps "$steps" --json > "$out/ours-$name.json"; then
        peak=$( [ -s "$out/mem-ours-$name.log" ] && sort -n "$out/mem-ours-$name.log" | tail -1 || echo none)
        "$python" -c 'import json,sys; r=json.load(open(sys.argv[1])); r.update(row=sys.argv[2], device_peak_mib=None if sys.argv[3] == "none" else float(sys.argv[3]) - float(sys.argv[4])); print(json.dumps(r))' \
            "$out/ours-$name.json" "$name" "$peak" "$idle" >> "$out/steps.jsonl"
    else
        status=1
    fi
    if [ $torch_ok = 1 ]; then
        torch_device=$device
        if sampled_row "$out/mem-torch-$name.log" "$python" "$here/bench/torch_reference.py" \
                --model "$data/models/large" --device "$torch_device" --plan "$plan" --targets "$targets" \
                "${shape[@]}" --steps "$steps" --threads "$(nproc)" > "$out/torch-$name.json"; then
            peak=$( [ -s "$out/mem-torch-$name.log" ] && sort -n "$out/mem-torch-$name.log" | tail -1 || echo none)
            "$python" -c 'import json,sys; r=json.load(open(sys.argv[1])); r.update(row=sys.argv[2], device_peak_mib=None if sys.argv[3] == "none" else float(sys.argv[3]) - float(sys.argv[4])); print(json.dumps(r))' \
                "$out/torch-$name.json" "$name" "$peak" "$idle" >> "$out/steps.jsonl"
        else
            say "PyTorch row $name failed"
        fi
    fi
done

# --- The CLI end to end on the device ---------------------------------------------------
say "estimate and finetune on $device (tiny model, a written GLUE SST-2 file)"
"$python" - "$data" <<'EOF'
import random, sys
random.seed(0)
good = "good great love wonderful excellent brilliant fun charming".split()
bad = "bad awful terrible boring dull poor weak stupid".split()
filler = "the movie film story plot was is very really quite".split()
for name, n in (("train.tsv", 96), ("dev.tsv", 32)):
    with open(f"{sys.argv[1]}/{name}", "w") as f:
        f.write("sentence\tlabel\n")
        for i in range(n):
            label = i % 2
            words = random.sample(filler, 4) + random.sample(good if label else bad, 2)
            random.shuffle(words)
            f.write(" ".join(words) + f"\t{label}\n")
EOF
e2e=(--task glue-sst2 --train-file "$data/train.tsv" --dev-file "$data/dev.tsv" --model tiny-bert
     --device "$device" --json --preset quick-demo --estimation-steps 12 --batch-size 16 --max-len 16)
if lp estimate "${e2e[@]}" --run gpu-est > "$out/e2e-estimate.json" \
   && lp finetune --run gpu-est --device "$device" --json --epochs 1 > "$out/e2e-finetune.json"; then
    say "end to end: ok"
else
    say "end to end: FAILED"
    status=1
fi

# --- The table --------------------------------------------------------------------------
"$python" - "$out/steps.jsonl" > "$out/table.md" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = {(r["impl"], r["row"]): r for r in rows}
names = ["vanilla-qv", "vanilla-all", "light-peft-paper", "light-peft-half"]
first = next(iter(rows), {})
print(f"device {first.get('device', '?')}, batch {first.get('batch')} x {first.get('len')} tokens, "
      f"fp32, median of the timed steps; speed-up against each side's own vanilla-all")
print()
print("| row | trainable | ours ms | PyTorch ms | ours / PyTorch | ours speed-up | PyTorch speed-up "
      "| ours device MiB | PyTorch device MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
def ms(r): return r["median_s"] * 1000 if r else None
def cell(v, fmt): return fmt.format(v) if v is not None else "n/a"
for name in names:
    ours, torch = by.get(("lightpeft", name)), by.get(("pytorch", name))
    base_ours, base_torch = by.get(("lightpeft", "vanilla-all")), by.get(("pytorch", "vanilla-all"))
    ratio = ms(ours) / ms(torch) if ours and torch else None
    up_ours = ms(base_ours) / ms(ours) if ours and base_ours else None
    up_torch = ms(base_torch) / ms(torch) if torch and base_torch else None
    print(f"| {name} | {ours['trainable'] if ours else 'n/a'} | {cell(ms(ours), '{:.1f}')} | "
          f"{cell(ms(torch), '{:.1f}')} | {cell(ratio, '{:.2f}')} | {cell(up_ours, '{:.2f}x')} | "
          f"{cell(up_torch, '{:.2f}x')} | {cell(ours and ours.get('device_peak_mib'), '{:.0f}')} | "
          f"{cell(torch and torch.get('device_peak_mib'), '{:.0f}')} |")
EOF
cat "$out/table.md"
say "done (status $status)"
exit $status
