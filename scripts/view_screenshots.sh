#!/usr/bin/env bash
# The README's pictures of `cai view`: writes the pages, then docs/view-{run,eval,iterate}.png.
#   scripts/view_screenshots.sh RUN_DIR EVAL_DIR ITERATE_DIR [ROW_ID]
# ROW_ID: the run row whose chain is shown open (default: the first row).
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1 eval=$2 iterate=$3 row=${4:-}
BIN=${VENV:-.venv}/bin
CHROMIUM=${CAI_CHROMIUM:-$(command -v chromium || command -v chromium-browser)}
for d in "$run" "$eval" "$iterate"; do "$BIN/cai" view "$d" | tail -1; done
[ -n "$row" ] || row=$(head -1 "$run/generations.jsonl" | "$BIN/python" -c "import json,sys; print(json.load(sys.stdin)['id'])")

shot() {  # page, hash, output, height
  profile=$(mktemp -d)
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --window-size="1400,$4" --virtual-time-budget=3000 --screenshot="$3" "file://$(realpath "$1")#$2" 2>/dev/null
  rm -rf "$profile"
  echo "wrote $3"
}
shot "$run/view.html" "open=$row" docs/view-run.png 900
shot "$run/view.html" "tab=principles" docs/view-principles.png 900
shot "$eval/view.html" "open=0" docs/view-eval.png 900
shot "$iterate/view.html" "" docs/view-iterate.png 720
