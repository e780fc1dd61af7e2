#!/usr/bin/env bash
# N workers of a MultiWorkerMirroredStrategy job on this machine (free ports
# on localhost): multi-worker runs without a cluster, for tests and debugging.
#
#   launch/local_cluster.sh 2 --flagfile=configs/demo.flags --mode=search --model_dir=runs/demo2
#
# Worker I logs to MODEL_DIR/worker_I.log (appended; its process id is in
# MODEL_DIR/worker_I.pid while it runs). Waits for every worker and returns
# 0 if all succeed. If one fails (or is killed), the others would fail or hang
# in their next collective: they are stopped at once, and the status is the
# chief's (worker 0's) if it failed, else that of the first worker that
# failed. Everything the chief finished stays in MODEL_DIR: running the same
# command again resumes from its last checkpoint.
#
# With at least N GPUs (nvidia-smi), worker I gets GPU I; otherwise the
# workers share what CUDA_VISIBLE_DEVICES gives them (set it to "" for CPU).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/_common.sh"

usage() {
  echo "usage: launch/local_cluster.sh N [bnas_tf.launch flags...]   (N: number of workers, >= 1)"
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
is_count "$1" || { usage >&2; die "N must be a positive integer. Received: N=$1"; }
n="$1"
shift
model_dir="$(model_dir_of "$@")"
[[ -n "$model_dir" ]] || die "no --model_dir (on the command line or in a --flagfile)."
mkdir -p "$model_dir"

ports="$("$PYTHON" - "$n" <<'PY'
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("localhost", 0))
print(",".join(f"localhost:{s.getsockname()[1]}" for s in sockets))
PY
)"

gpus=()
if [[ -z "${CUDA_VISIBLE_DEVICES+set}" ]] && command -v nvidia-smi >/dev/null 2>&1; then
  mapfile -t gpus < <(nvidia-smi -L 2>/dev/null | grep '^GPU' | sed 's/^GPU \([0-9]*\):.*/\1/')
  ((${#gpus[@]} >= n)) || gpus=()
fi

pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do
    [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 20); do
    local alive=0
    for pid in "${pids[@]}"; do
      [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && alive=1
    done
    ((alive)) || break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do
    [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$model_dir"/worker_*.pid
}
trap 'echo "$(basename "$0"): interrupted; stopping the workers." >&2; stop_all; exit 130' INT TERM

echo "$(basename "$0"): $n workers on $ports; logs in $model_dir/worker_*.log" >&2
for ((i = 0; i < n; i++)); do
  log="$model_dir/worker_$i.log"
  echo "==== $(date '+%F %T') launch/local_cluster.sh: worker $i of $n ($ports)" >>"$log"
  if ((${#gpus[@]})); then
    CUDA_VISIBLE_DEVICES="${gpus[$i]}" "$here/multi_worker.sh" --workers="$ports" --index="$i" "$@" >>"$log" 2>&1 &
  else
    "$here/multi_worker.sh" --workers="$ports" --index="$i" "$@" >>"$log" 2>&1 &
  fi
  pids+=("$!")
  echo "$!" >"$model_dir/worker_$i.pid"
done

status=0
failed=""
left="$n"
while ((left > 0)) && [[ -z "$failed" ]]; do
  for ((i = 0; i < n; i++)); do
    pid="${pids[$i]}"
    [[ -n "$pid" ]] || continue
    kill -0 "$pid" 2>/dev/null && continue
    code=0
    wait "$pid" || code=$?
    pids[$i]=""
    rm -f "$model_dir/worker_$i.pid"
    left=$((left - 1))
    if ((code != 0)); then
      failed="$i"
      status="$code"
      break
    fi
  done
  [[ -n "$failed" ]] || sleep 1
done

if [[ -n "$failed" ]]; then
  echo "$(basename "$0"): worker $failed exited with status $status (log: $model_dir/worker_$failed.log)." >&2
  if ((left > 0)); then
    echo "$(basename "$0"): stopping the other workers (they cannot go on without it)." >&2
    chief_pid="${pids[0]}"
    stop_all
    if [[ "$failed" != 0 && -n "$chief_pid" ]]; then
      wait "$chief_pid" 2>/dev/null || true
    fi
  fi
  echo "$(basename "$0"): what the chief finished is kept in $model_dir; run the same command again to resume." >&2
  exit "$status"
fi
echo "$(basename "$0"): all $n workers finished." >&2
