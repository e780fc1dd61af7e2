#!/usr/bin/env bash
# One machine, N GPUs: MirroredStrategy over the first N GPUs (of
# CUDA_VISIBLE_DEVICES if set, else GPUs 0..N-1). Batch flags are per GPU:
# the global batch is N times the flag; add --scale_learning_rate to multiply
# the learning rates by N.
#
#   launch/multi_gpu.sh 4 --flagfile=configs/cifar.flags --model_dir=runs/cifar4
set -euo pipefail
source "$(dirname "$0")/_common.sh"

usage() {
  echo "usage: launch/multi_gpu.sh N [bnas_tf.launch flags...]   (N: number of GPUs, >= 1)"
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
is_count "$1" || { usage >&2; die "N must be a positive integer. Received: N=$1"; }
n="$1"
shift

if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
else
  gpus=()
  for ((i = 0; i < n; i++)); do gpus+=("$i"); done
fi
if ((${#gpus[@]} < n)); then
  die "asked for $n GPUs but CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES lists ${#gpus[@]}."
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  found="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
  if ((found < n)); then die "asked for $n GPUs but nvidia-smi lists $found."; fi
fi
CUDA_VISIBLE_DEVICES="$(IFS=,; echo "${gpus[*]:0:n}")"
export CUDA_VISIBLE_DEVICES

exec "$PYTHON" -m bnas_tf.launch --strategy=mirrored "$@"
