#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run (CI has no GPU; see docs/contributing.md).
#
# For a machine whose python3 already has torch, pytest and the scientific stack but no
# network: build the workspace's wheels and the missing dependencies into .whl/ first,
#   uv build --all-packages --wheel -o .whl   (plus pydantic, duckdb, plotly: see the docs)
# then run this from the repository root. Logs go to $OUT (default /tmp/gpu-check).
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1

failed=()
check() {  # check NAME SECONDS COMMAND...: run with a time limit, keep the whole log
    local name=$1 limit=$2
    shift 2
    echo "=== $name"
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed+=("$name")
}
pytest=(python3 -m pytest -q -p no:cacheprovider -rs)

# The whole trainer suite runs on the GPU (training.device defaults to auto), slow tests too:
# about 400 s in one process, 287 s in 8 workers where pytest-xdist is installed (torchrun's
# --standalone picks a free port per test, so the DDP tests run side by side); 12 workers
# where there are 16 cores or more.
xdist=()
workers=8
[ "$(nproc)" -ge 16 ] && workers=12
python3 -c "import xdist" 2>/dev/null && xdist=(-n "$workers")
check trainer 420 "${pytest[@]}" "${xdist[@]}" packages/trainer/tests --run-slow
# Every loss on CUDA against the CPU, and under CUDA's sync debug mode.
check losses 120 "${pytest[@]}" packages/losses/tests/test_on_cuda.py \
    tests/integration/test_trainer_losses.py
check bench 120 "${pytest[@]}" packages/bench/tests/test_cuda.py \
    packages/bench/tests/test_cuda_detection.py packages/bench/tests/test_timer.py
# ModelTest's checks run on cuda:0 there (device_move included); the transformers models
# are left out: the machine's transformers need not be the locked one.
check testing 120 "${pytest[@]}" packages/testing/tests \
    --ignore packages/testing/tests/test_real_models.py
check generator 120 "${pytest[@]}" packages/generator/tests/test_generate.py -k cuda
# Performance: the trainer against a hand-written loop (CPU, one thread, and CUDA), with
# PyTorch Lightning's ratio where it is installed; chunked clip's peak GPU memory.
check perf 240 "${pytest[@]}" -m perf -s tests/performance/test_trainer_overhead.py \
    "tests/performance/test_losses_speed.py::test_chunked_clip_peak_memory"

echo "failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
