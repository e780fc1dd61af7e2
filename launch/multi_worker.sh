#!/usr/bin/env bash
# One worker of a MultiWorkerMirroredStrategy job: run it on every host, the
# same flags everywhere, --index from 0 to (number of workers - 1). Writes
# TF_CONFIG for this worker and runs --strategy=multi_worker.
#
#   host1$ launch/multi_worker.sh --workers=host1:12345,host2:12345 --index=0 --flagfile=configs/cifar.flags --model_dir=/nfs/runs/c
#   host2$ launch/multi_worker.sh --workers=host1:12345,host2:12345 --index=1 --flagfile=configs/cifar.flags --model_dir=/nfs/runs/c
#
# Worker 0 is the chief: it alone writes --model_dir (checkpoints, genotype,
# TensorBoard, the tuner's state). Every other worker runs in a scratch
# directory, --model_dir/.workers/worker_I, that starts as a copy of the
# chief's state (so that a resumed job resumes from the chief's last
# checkpoint on every worker): --model_dir must be a path that every host
# reads (local disk for one host, NFS for several).
#
# If a worker dies, the others fail or hang in their next collective: stop
# them all and run the same commands again; the job resumes from the chief's
# last checkpoint. launch/local_cluster.sh does this for a localhost cluster.
set -euo pipefail
source "$(dirname "$0")/_common.sh"

usage() {
  echo "usage: launch/multi_worker.sh --workers=HOST:PORT,HOST:PORT[,...] --index=I [bnas_tf.launch flags...]"
}

workers=""
index=""
args=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --workers=*) workers="${1#--workers=}" ;;
    --workers) (($# > 1)) || { usage >&2; exit 2; }; workers="$2"; shift ;;
    --index=*) index="${1#--index=}" ;;
    --index) (($# > 1)) || { usage >&2; exit 2; }; index="$2"; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
if [[ -z "$workers" || -z "$index" ]]; then
  usage >&2
  exit 2
fi
IFS=, read -r -a hosts <<<"$workers"
for host in "${hosts[@]}"; do
  [[ "$host" =~ ^[^:[:space:]]+:[0-9]+$ ]] || die "--workers must be HOST:PORT,HOST:PORT,... Received: --workers=$workers"
done
[[ "$index" =~ ^[0-9]+$ ]] && ((index < ${#hosts[@]})) ||
  die "--index must be an integer in [0, ${#hosts[@]}). Received: --index=$index"

cluster=""
for host in "${hosts[@]}"; do cluster+="${cluster:+,}\"$host\""; done
export TF_CONFIG="{\"cluster\": {\"worker\": [$cluster]}, \"task\": {\"type\": \"worker\", \"index\": $index}}"

if ((index > 0)); then
  model_dir="$(model_dir_of "${args[@]}")"
  [[ -n "$model_dir" ]] || die "no --model_dir (on the command line or in a --flagfile)."
  [[ "$model_dir" != *://* ]] ||
    die "worker $index needs a --model_dir on a file system that this host reads (NFS), to copy the chief's state. Received: --model_dir=$model_dir"
  scratch="$model_dir/.workers/worker_$index"
  rm -rf "$scratch"
  mkdir -p "$scratch"
  if [[ -d "$model_dir" ]]; then
    # The chief's state as it is now (its last checkpoint, the tuner's state),
    # without logs, TensorBoard events, exports or other workers' scratch.
    tar -C "$model_dir" -cf - --exclude=./.workers --exclude='./worker_*' --exclude=tensorboard --exclude=export . |
      tar -C "$scratch" -xf -
  fi
  args+=("--model_dir=$scratch")
fi

echo "$(basename "$0"): worker $index of ${#hosts[@]}, TF_CONFIG=$TF_CONFIG" >&2
exec "$PYTHON" -m bnas_tf.launch --strategy=multi_worker "${args[@]}"
