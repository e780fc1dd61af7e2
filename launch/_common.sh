# Shared by the launchers (sourced, not run): the repository, the Python to
# use, and the --model_dir that a command line (and its flag files) names.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}"

# $PYTHON, else the active virtual environment's, else the repository's .venv, else python3.
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" && -x "${VIRTUAL_ENV}/bin/python" ]]; then
    PYTHON="${VIRTUAL_ENV}/bin/python"
  elif [[ -x "${REPO}/.venv/bin/python" ]]; then
    PYTHON="${REPO}/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

is_count() {
  [[ "$1" =~ ^[1-9][0-9]*$ ]]
}

# The last --model_dir of the flags "$@" (absl order: later wins, a flag file
# counts where it appears); empty if none.
model_dir_of() {
  local dir="" arg next=""
  for arg in "$@"; do
    if [[ -n "$next" ]]; then
      if [[ "$next" == model_dir ]]; then dir="$arg"; else dir="$(_model_dir_in_file "$arg" "$dir")"; fi
      next=""
      continue
    fi
    case "$arg" in
      --model_dir=*) dir="${arg#--model_dir=}" ;;
      --model_dir) next=model_dir ;;
      --flagfile=*) dir="$(_model_dir_in_file "${arg#--flagfile=}" "$dir")" ;;
      --flagfile) next=flagfile ;;
    esac
  done
  printf '%s' "$dir"
}

_model_dir_in_file() {
  local file="$1" dir="$2" line
  [[ -r "$file" ]] || { printf '%s' "$dir"; return; }
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    case "$line" in
      --model_dir=*) dir="${line#--model_dir=}" ;;
      --flagfile=*) dir="$(_model_dir_in_file "${line#--flagfile=}" "$dir")" ;;
    esac
  done <"$file"
  printf '%s' "$dir"
}
