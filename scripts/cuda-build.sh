#!/usr/bin/env bash
# Builds lightpeft with candle's CUDA backend on a machine without a GPU, for carrying to one:
#
#   bash scripts/cuda-build.sh            # release binary -> target-cuda/lightpeft-cuda
#   bash scripts/cuda-build.sh --check    # cargo check --features cuda (still runs nvcc)
#   bash scripts/cuda-build.sh --engine-only
#
# The compiler comes from NVIDIA's PyPI wheels, pinned to one CUDA 13.0 set: nvcc 13.1 and
# later write PTX of a newer ISA that the GPU machine's driver (580, CUDA 13.0) refuses to
# load. No wheel carries libcuda (the driver's) or needs cuBLAS at build time, so those are
# link-only stubs generated from cudarc's own declarations; the GPU machine's real libraries
# replace them at run time (bench/gpu_check.sh finds them). Not run by CI: the first build
# compiles candle's kernels with nvcc, which takes a long while on two cores.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=$root/target-cuda
cache=${LIGHTPEFT_CUDA_CACHE:-$target/toolkit}
mode=build
case ${1:-} in
    "") ;;
    --check) mode=check ;;
    --engine-only) mode=engine ;;
    *) echo "usage: $0 [--check|--engine-only]" >&2; exit 2 ;;
esac
started=$(date +%s)
phase() { printf '[%4ss] %s\n' $(( $(date +%s) - started )) "$*"; }

# The CUDA 13.0 set, as cuda-toolkit==13.0.2 pins it (cuBLAS left out: stubbed).
wheels=(
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
    nvidia-curand==10.4.0.35
)
marker=$cache/.lightpeft-wheels
if [ "$(cat "$marker" 2>/dev/null)" != "${wheels[*]}" ]; then
    phase "installing the CUDA 13.0 wheels into $cache"
    rm -rf "$cache"
    python3 -m pip install --quiet --disable-pip-version-check --target "$cache" \
        --no-deps --only-binary=:all: "${wheels[@]}"
    echo "${wheels[*]}" > "$marker"
fi
cuda=$cache/nvidia/cu13
[ -x "$cuda/bin/nvcc" ] || { echo "no nvcc in $cuda/bin" >&2; exit 1; }

# Wheels ship versioned sonames only; the linker asks for libX.so. nvcc.profile looks in
# lib64, the wheels use lib.
ln -sfn lib "$cuda/lib64"
for lib in libcudart.so.13 libnvrtc.so.13 libcurand.so.10; do
    ln -sfn "$lib" "$cuda/lib/${lib%.so.*}.so"
done

# Stubs: one function per symbol cudarc declares, with the real library's soname so the
# binary asks for the real one at run time. Each returns an error code (100 is the driver's
# CUDA_ERROR_NO_DEVICE; any non-zero is a cuBLAS failure), so a binary started against them
# by mistake reports "no usable CUDA GPU" instead of running on garbage.
stubs=$cuda/lib/stubs
cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 2>/dev/null | head -1)
if [ -z "$cudarc" ]; then
    (cd "$root" && cargo fetch --quiet)
    cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 | head -1)
fi
mkdir -p "$stubs"
stub() {
    local name=$1 soname=$2 declarations=$3 code=$4
    local src=$stubs/${name%.so}.c
    # The declarations are the one-line `fn name(..) -> T;` inside each wrapper's `extern "C"`
    # block; the trailing `;` keeps out the multi-line `fn bitand(` of bindgen's operator impls.
    grep -E '^ +fn [A-Za-z_][A-Za-z0-9_]*\(.*;$' "$declarations" \
        | sed -E "s/^ +fn ([A-Za-z0-9_]+)\\(.*/int \\1(void) { return $code; }/" \
        | sort -u > "$src.new"
    if [ -f "$stubs/$name" ] && cmp -s "$src.new" "$src"; then rm "$src.new"; return; fi
    mv "$src.new" "$src"
    gcc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/$name" "$src"
    ln -sfn "$name" "$stubs/$soname"
    phase "stub $name ($soname): $(wc -l < "$src") symbols"
}
stub libcuda.so libcuda.so.1 "$cudarc/src/driver/sys/mod.rs" 100
stub libcublas.so libcublas.so.13 "$cudarc/src/cublas/sys/mod.rs" 1
stub libcublasLt.so libcublasLt.so.13 "$cudarc/src/cublaslt/sys/mod.rs" 1

# What candle-kernels' cudaforge and cudarc's build scripts read. cudarc runs `nvcc
# --version` from PATH; CUDARC_CUDA_VERSION spares it the guess.
export PATH=$cuda/bin:$cuda/nvvm/bin:$PATH
export CUDA_HOME=$cuda CUDA_PATH=$cuda CUDA_ROOT=$cuda
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
export LIBRARY_PATH=$stubs:$cuda/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$stubs -L native=$cuda/lib"
# Small enough to carry: no debug info, symbols stripped.
export CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
nvcc --version | tail -2

cd "$root"
case $mode in
    check)
        phase "cargo check --features cuda"
        cargo check -p lightpeft --features cuda --target-dir "$target"
        ;;
    engine)
        phase "cargo build --release -p lightpeft-engine --features cuda"
        cargo build --release -p lightpeft-engine --features cuda --target-dir "$target"
        ;;
    build)
        phase "cargo build --release -p lightpeft --features cuda"
        cargo build --release -p lightpeft --features cuda --target-dir "$target"
        cp "$target/release/lightpeft" "$target/lightpeft-cuda"
        # candle's quantized-matmul kernels (sm_90 code, unused here but linked) make the binary
        # larger than a device run may carry (64 MiB); it travels xz-compressed and
        # bench/gpu_check.sh unpacks it.
        python3 -c 'import lzma, shutil, sys
with open(sys.argv[1], "rb") as src, lzma.open(sys.argv[2], "wb", preset=6) as dst:
    shutil.copyfileobj(src, dst)' "$target/lightpeft-cuda" "$target/lightpeft-cuda.xz"
        size=$(stat -c %s "$target/lightpeft-cuda")
        packed=$(stat -c %s "$target/lightpeft-cuda.xz")
        phase "$target/lightpeft-cuda: $((size >> 20)) MiB ($((packed >> 20)) MiB as .xz); needs $(readelf -d "$target/lightpeft-cuda" | grep -oE 'lib(cuda|cublas|cublasLt|curand|nvrtc|cudart)\.so\.[0-9]+' | tr '\n' ' ')"
        if [ "$packed" -ge $((64 << 20)) ]; then
            echo "even compressed, the binary is 64 MiB or more: too large to carry" >&2
            exit 1
        fi
        # Started against the stubs (no driver here) it must refuse the GPU in words.
        if out=$(LD_LIBRARY_PATH=$stubs:$cuda/lib "$target/lightpeft-cuda" device-check parity --device cuda 2>&1); then
            echo "the stub driver opened a GPU: $out" >&2
            exit 1
        fi
        case $out in
            *"no usable CUDA GPU 0"*) phase "without a driver: $(echo "$out" | head -1 | cut -c1-160)" ;;
            *) echo "unexpected answer without a driver: $out" >&2; exit 1 ;;
        esac
        ;;
esac
phase "done"
