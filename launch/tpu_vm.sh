#!/usr/bin/env bash
# On a Cloud TPU VM: TPUStrategy over the VM's TPU cores. Data and --model_dir
# usually live on GCS (gs://...): a TPU reads and writes through tf.io.gfile.
#
#   launch/tpu_vm.sh --flagfile=configs/imagenet.flags --data_dir=gs://BUCKET/tfds --model_dir=gs://BUCKET/runs/in
set -euo pipefail
source "$(dirname "$0")/_common.sh"

usage() {
  echo "usage: launch/tpu_vm.sh [bnas_tf.launch flags...]   (runs --strategy=tpu --tpu=local)"
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac

exec "$PYTHON" -m bnas_tf.launch --strategy=tpu --tpu=local "$@"
