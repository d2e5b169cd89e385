#!/usr/bin/env bash
# The model benchmark of an H100 session, in one go (at most 8 minutes): row A (ResNet-101 / DETR,
# configs/iterative_model.yaml) and "ours" (VoVNet-99 CenterMask, configs/iterative_vovnet99_centermask.yaml) at
# batch 3, 800x1216, in bf16 eager (with the training-step profile and the host-sync count of row A) and fp32
# eager; row A also compiled (MODEL.COMPILE: the network and the loss compiled around the matcher, inductor) in bf16,
# once with torch.compile's default mode and once with mode "reduce-overhead" (CUDA graphs) on MODEL.STATIC_SHAPES;
# then one summary table against the targets (step and inference times, ATen operators and host syncs per step,
# the first step = compile time).  The two compiled variants share the inductor cache ($out/inductor_cache).
#
# Before the device call, here, from the repository root (the device has no network):
#     bash benchmarks/make_device_wheels.sh      # fvcore, iopath, yacs, termcolor, pycocotools into .whl/
# The device call (the run tool): command "bash benchmarks/run_gpu_benchmarks.sh", carry [".whl"], timeout_s 540.
# Results: $OUT (or the first argument, default output/gpu_bench): <variant>.log and <variant>.json per variant,
# summary.txt.  Smoke test of this script without a GPU: BENCH_SMOKE=1 bash benchmarks/run_gpu_benchmarks.sh DIR
# (the eager steps on the CPU with the tiny config at 96x128, one iteration each; about a minute).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-output/gpu_bench}}
mkdir -p "$out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if ! $PY -c "import fvcore, iopath, yacs, pycocotools" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "fvcore/iopath/yacs/pycocotools are missing and there is no .whl/: run" \
            "'bash benchmarks/make_device_wheels.sh' before the device call and carry .whl" >&2
        exit 2
    fi
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 2
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

if [ "${BENCH_SMOKE:-0}" = 1 ]; then
    configs=(configs/tiny_cpu.yaml) compiled_configs=()  # compiling takes minutes on a CPU: not in the smoke test
    common=(--device cpu --threads 1 --size 96 128 --iters 1 --warmup 2)
    limit_eager=120 limit_fp32=120 limit_compile=0
else
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    configs=(configs/iterative_model.yaml configs/iterative_vovnet99_centermask.yaml)
    compiled_configs=(configs/iterative_model.yaml)
    common=(--device cuda --batch 3 --size 800 1216 --iters 10 --warmup 3)
    limit_eager=90 limit_fp32=60 limit_compile=150
fi
uptime
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

# run NAME SECONDS ARGS...: one bench_model process (its own CUDA context and peak-memory counters), time-limited;
# bench_model writes its JSON after every config, so a variant stopped by its limit keeps what it finished.
run() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): bench_model.py ${common[*]} $*"
    timeout "$limit" $PY benchmarks/bench_model.py "${common[@]}" --json-out "$out/$name.json" "$@" 2>&1 \
        | tee "$out/$name.log"
    local status=${PIPESTATUS[0]}
    [ "$status" = 0 ] || echo "== $name ended with status $status (124: stopped at its time limit)"
}

start=$SECONDS
echo "== arithmetic (meta tensors): the floor of step / bb_fb"
$PY benchmarks/bench_model.py "${common[@]}" --flops --config-file "${configs[@]}" 2>&1 | tee "$out/flops.log"
run bf16_eager "$limit_eager" --config-file "${configs[@]}" --amp --profile --count-ops
run fp32_eager "$limit_fp32" --config-file "${configs[@]}" --no-amp
if [ ${#compiled_configs[@]} -gt 0 ]; then
    export TORCHINDUCTOR_CACHE_DIR="$out/inductor_cache"
    run bf16_compile "$limit_compile" --config-file "${compiled_configs[@]}" --amp --compile --count-ops
    run bf16_reduce_overhead "$limit_compile" --config-file "${compiled_configs[@]}" --amp --compile --count-ops \
        MODEL.COMPILE_MODE reduce-overhead MODEL.STATIC_SHAPES.ENABLED True
fi
echo "== all variants: $((SECONDS - start)) s"

$PY - "$out" <<'EOF' 2>&1 | tee "$out/summary.txt"
"""One row per (config, variant), the speed-up over fp32 eager and the issue's targets."""
import json
import os
import sys

out = sys.argv[1]
rows = {}
for variant in ("fp32_eager", "bf16_eager", "bf16_compile", "bf16_reduce_overhead"):
    path = os.path.join(out, f"{variant}.json")
    if os.path.exists(path):
        with open(path) as f:
            payload = json.load(f)
        for result in payload["results"]:
            rows[(result["config"], variant)] = result
        environment = payload["environment"]
print(f"\n== summary ({environment.get('gpu', 'cpu')}, torch {environment['torch']}, {environment['date']})")
print("targets: step <= 1.4 x backbone fwd+bwd; inference <= 1.5 x backbone fwd; step >= 2 x faster than fp32 eager;"
      " VoVNet-99 CenterMask training at batch 3 within 40 GB")
header = ("config", "variant", "step ms", "img/s", "step/bb_fb", "infer ms", "infer/bb_f", "vs fp32 eager",
          "train GiB", "ops/step", "syncs/step", "1st step s")
print("  ".join(f"{h:>14}" for h in header))
for (config, variant), r in sorted(rows.items()):
    base = rows.get((config, "fp32_eager"))
    speedup = f"{base['train_step_ms'] / r['train_step_ms']:.2f}x" if base else "-"
    values = (config[:14], variant, f"{r['train_step_ms']:.1f}", f"{r['images_per_s']:.2f}",
              f"{r['train_ratio']:.2f}", f"{r['inference_ms']:.1f}", f"{r['inference_ratio']:.2f}", speedup,
              f"{r['train_peak_mib'] / 1024:.1f}", f"{r.get('aten_ops_per_step', 0):.0f}",
              f"{r.get('syncs_per_step', 0):g}", f"{r.get('first_step_s', 0):.1f}")
    print("  ".join(f"{v:>14}" for v in values))
EOF
