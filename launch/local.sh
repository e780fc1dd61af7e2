#!/usr/bin/env bash
# One machine: the TPU of --tpu, else MirroredStrategy over every local GPU if
# there are several (or over --cpu_devices logical CPUs), else one device.
#
#   launch/local.sh --flagfile=configs/demo.flags
#   launch/local.sh --flagfile=configs/cifar.flags --model_dir=runs/cifar
set -euo pipefail
source "$(dirname "$0")/_common.sh"

usage() {
  echo "usage: launch/local.sh [bnas_tf.launch flags...]   (at least --model_dir or a --flagfile that sets it)"
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac

exec "$PYTHON" -m bnas_tf.launch --strategy=auto "$@"
