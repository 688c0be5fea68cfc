#!/usr/bin/env bash
# The GPU checks of issue 20 (section 4), prepared to run on a lent GPU machine in one call:
# the CUDA tests skipped on CPU, one `fit` + `validate` on a tiny folder with
# `--trainer.accelerator gpu`, and benchmarks/gpu_resnet50.py (synthetic and JPEG batches, with
# and without `--data.decode_device cuda`, then the compiled variants).
#
#   bash benchmarks/gpu_session.sh --fetch-wheels   # here, online: jsonargparse & co. into .whl/
#   bash benchmarks/gpu_session.sh [STAGE...]       # there: checks, bench, compile (default: all)
#   GPU_SESSION_DRY=1 bash benchmarks/gpu_session.sh checks   # here, on the CPU: the same steps
#
# The machine's image holds torch, torchvision, Lightning, torchmetrics, TensorBoard, matplotlib,
# SciPy, scikit-learn and pytest but not jsonargparse (LightningCLI's parser), so its pure-Python
# wheels travel in .whl/ (ignored by git; name it in the call's `carry`). Each stage has its own
# time limit, so one that hangs leaves the others' logs; logs go to $OUT (or /tmp/gpu-session).
set -u -o pipefail
cd "$(dirname "$0")/.."

WHEELS=(jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0)
if [ "${1:-}" = "--fetch-wheels" ]; then
    exec python3 -m pip download --no-deps --only-binary=:all: -d .whl "${WHEELS[@]}"
fi

stage_checks() {
    stage cuda-tests 120 "$PYTHON" -m pytest -q -p no:cacheprovider -o addopts=-ra \
        tests/test_decode_on_device.py tests/test_decoding_fast.py
    stage gpu-fit 120 bash -c tiny_fit
}
stage_bench() {
    stage bench 200 "$PYTHON" benchmarks/gpu_resnet50.py --repeats 2 --warmup 10 --steps 30 \
        --variants plain-fp32 plain-bf16-cl lightning-bf16-cl lightning-bf16-cl-jpeg \
        lightning-bf16-cl-jpeg-decode-cuda
}
stage_compile() {
    stage compile 240 "$PYTHON" benchmarks/gpu_resnet50.py --repeats 2 --warmup 10 --steps 30 \
        --variants plain-bf16-cl-compile lightning-bf16-cl-compile
}

[ $# -gt 0 ] || set -- checks bench compile
for name in "$@"; do
    if ! declare -F "stage_$name" >/dev/null; then
        echo "gpu_session.sh: unknown stage '$name' (expected checks, bench or compile)" >&2
        exit 2
    fi
done
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
# A dry run on a machine without CUDA takes the same paths on the CPU.
if [ -n "${GPU_SESSION_DRY:-}" ]; then ACCELERATOR=cpu DECODE=cpu; else ACCELERATOR=gpu DECODE=cuda; fi
PYTHON=${PYTHON:-python3}
export ACCELERATOR DECODE PYTHON
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
    local name=$1 limit=$2 start=$SECONDS status
    shift 2
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    status=$?
    echo "== $name: exit $status after $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PYTHON" -c "import sys, torch, torchvision, lightning, jsonargparse
print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__,
      'lightning', lightning.__version__, 'jsonargparse', jsonargparse.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA DEVICE')"
} 2>&1 | tee "$OUT/summary.txt"

tiny_fit() {  # fit 2 epochs on a tiny photo folder on the GPU, decoding there, then validate
    local data=/tmp/gpu-session-tiny runs=/tmp/gpu-session-runs
    rm -rf "$data" "$runs"
    "$PYTHON" -c "import sys; sys.path.insert(0, 'benchmarks'); from _data import write_photo_tree
write_photo_tree('$data/train', 4, 24); write_photo_tree('$data/val', 4, 6, seed=1)" || return 1
    local args=(--data ImageFolderDataModule --data.data_dir "$data" --data.image_size 64
        --data.batch_size 16 --data.num_workers 4 --model.backbone resnet18
        --trainer.accelerator "$ACCELERATOR" --trainer.devices 1 --trainer.precision bf16-mixed
        --trainer.logger.init_args.save_dir "$runs" --trainer.logger.init_args.name gpu-check)
    "$PYTHON" -m lit_classifiers fit "${args[@]}" --data.decode_device "$DECODE" \
        --trainer.max_epochs 2 &&
        "$PYTHON" -m lit_classifiers validate "${args[@]}" \
            --ckpt_path "$runs/gpu-check/version_0/checkpoints/last.ckpt"
}
export -f tiny_fit

for name in "$@"; do
    "stage_$name"
done
cat "$OUT/summary.txt"
