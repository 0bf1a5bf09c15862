#!/usr/bin/env bash
# The main job in one command: set up, then generate text with a model.
#   scripts/demo.sh                         # a small random-weight model made on the spot
#   scripts/demo.sh --model FILE.gguf       # a real GGUF you downloaded
#   scripts/demo.sh --prompt "Once upon a time"
# (The multi-device cluster version of this demo arrives with the daemon issues; today it runs
# the model on this one device.)
set -euo pipefail
cd "$(dirname "$0")/.."

model=""
prompt="Once upon a time"
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --prompt) prompt="$2"; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--model FILE.gguf] [--prompt TEXT]" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
if [ -z "$model" ]; then
  model=build/demo-random.gguf
  [ -f "$model" ] || build/bin/hearth mkmodel --out "$model" --preset tiny --type q8_0 --seed 1
  cat >&2 <<'TXT'
demo: using a RANDOM-WEIGHT model: its text is noise by design (no download is needed).
demo: for real text, download a GGUF by hand (e.g. TinyLlama-1.1B-Chat Q4_0/Q8_0) and run
demo:   scripts/demo.sh --model /path/to/model.gguf
TXT
fi
build/bin/hearth run --model "$model" --prompt "$prompt" --n-predict 64
