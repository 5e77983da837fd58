#!/usr/bin/env bash
# The GPU checks of mlepi in one go, for a machine with a CUDA GPU (docs/performance.md, "On a GPU"):
#   1. tests/test_gpu.py: CUDA inference and one NCCL/DDP training step against the CPU;
#   2. benchmarks/performance_gpu.py: inference scaling and batched throughput on the GPU;
#   3. the default model trained on the GPU from the default run's dataset, for at most TRAIN_SECONDS
#      (metrics.csv and model.pt kept, to compare with the CPU-trained model).
# Needs the default run's results/ (scripts/run.sh) and benchmarks/results/performance.json; no GPAW.
#
#   bash benchmarks/gpu_run.sh [OUT_DIR]        # default benchmarks/results/gpu
#   GPU_TESTS="prediction or memory" TRAIN_SECONDS=30 bash benchmarks/gpu_run.sh   # a shorter run
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
python=${PYTHON:-python3}
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$out/nvidia_smi.csv"
"$python" -c "import torch, torch_geometric; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
'PyG', torch_geometric.__version__, torch.cuda.get_device_name())"

echo "== 1. tests/test_gpu.py"
"$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs ${GPU_TESTS:+-k "$GPU_TESTS"} || status=1

echo "== 2. benchmarks/performance_gpu.py"
"$python" benchmarks/performance_gpu.py --out-dir "$out" || status=1

echo "== 3. training on the GPU, at most ${TRAIN_SECONDS:=150} s"
train_dir=$(mktemp -d)
timeout "$TRAIN_SECONDS" "$python" -m torch.distributed.run --standalone --nproc_per_node 1 -m mlepi.cli train \
    --config config/config.yaml --dataset results/blg_ab/dataset/dataset.h5 --out-dir "$train_dir"
echo "training exit status $? (124: stopped at TRAIN_SECONDS; the metrics up to there are kept)"
cp "$train_dir/metrics.csv" "$out/train_metrics.csv" && cp "$train_dir/model.pt" "$out/train_model.pt" || status=1
tail -n 3 "$out/train_metrics.csv"
exit $status
