#!/usr/bin/env bash
# The whole of hearth in one command, on this machine: set up, start a head and two daemons on
# loopback, each allowed less memory than the model needs (so the planner must split it), launch
# the model across them, and chat with it through the head's HTTP API.
#   scripts/demo.sh                          # a random-weight model made on the spot: its text is noise
#   scripts/demo.sh --model FILE.gguf        # a real GGUF you downloaded
#   scripts/demo.sh --prompt "Hello"         # answer one prompt and exit (as when stdin is not a terminal)
#   scripts/demo.sh --http 0.0.0.0:8080      # where the web chat and the OpenAI API listen (default: a free loopback port)
# The daemons stop when the demo ends (Ctrl-D or /exit in the chat).
set -euo pipefail
cd "$(dirname "$0")/.."

model=""
prompt=""
http="127.0.0.1:0"
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --prompt) prompt="$2"; shift 2 ;;
    --http) http="$2"; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--model FILE.gguf] [--prompt TEXT] [--http HOST:PORT]" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
bin=build/bin
state=build/demo            # data dirs: device profile and weight cache survive between runs
logs=$(mktemp -d /tmp/hearth-demo.XXXXXX)
pids=()
stop_daemons() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$logs"
}
trap stop_daemons EXIT
trap 'exit 130' INT TERM

max_tokens=()
ctx=2048
if [ -z "$model" ]; then
  model=build/demo-random-q8.gguf
  # Big enough (~100 MB) that the memory limits below force a split over the devices.
  [ -f "$model" ] || $bin/hearth mkmodel --out "$model" --preset tiny --dim 1024 --layers 8 --heads 8 --kv-heads 4 \
    --ffn 2816 --ctx 2048 --type q8_0 --seed 1 >/dev/null
  max_tokens=(--max-tokens 48)  # random weights rarely say "end of text"
  ctx=512
  cat >&2 <<'TXT'
demo: using a RANDOM-WEIGHT model: its text is noise by design (no download is needed). For real
demo: text, download a GGUF by hand (e.g. TinyLlama-1.1B-Chat Q8_0 or Q4_0) and run
demo:   scripts/demo.sh --model /path/to/model.gguf
TXT
fi
[ -f "$model" ] || { echo "demo: no model file '$model'" >&2; exit 1; }
size=$(stat -L -c %s "$model")
# Each daemon may use about half the model: no device can hold it alone.
limit=$(( size / 2 + (64 << 20) ))
echo "demo: model $(basename "$model") is $(( size >> 20 )) MB; each daemon gets --memory-limit $(( limit >> 20 )) MB" >&2

# start NAME ARGS...: a daemon on free loopback ports; waits until it listens.
start() {
  local name=$1; shift
  mkdir -p "$state/$name"
  rm -f "$logs/$name.ready"
  $bin/hearthd --name "$name" --listen 127.0.0.1:0 --no-discovery --data-dir "$state/$name" \
    --memory-limit "$limit" --ready-file "$logs/$name.ready" "$@" 2>"$logs/$name.log" &
  pids+=($!)
  for _ in $(seq 600); do
    [ -s "$logs/$name.ready" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "demo: hearthd $name did not start:" >&2
  tail -n 20 "$logs/$name.log" >&2
  exit 1
}

start head --head --http "$http"
head=$(sed -n 1p "$logs/head.ready")
url=$(sed -n 2p "$logs/head.ready")
# The cluster is encrypted (CURVE): each daemon pairs with the head's join token, and the CLI
# talks to the head with the head's own keys (its data directory).
token=$($bin/hearth token --data-dir "$state/head")
export HEARTH_DATA_DIR="$state/head"  # for the hearth CLI below (daemons get --data-dir)
# The device is measured once (cached in its data dir); the other two daemons share this machine.
for name in a b; do
  mkdir -p "$state/$name"
  [ -f "$state/$name/profile.json" ] || cp "$state/head/profile.json" "$state/$name/profile.json"
  start "$name" --join "$head" --token "$token"
done
for _ in $(seq 100); do
  [ "$($bin/hearth --head "$head" devices --json | grep -c '"alive": true')" -ge 3 ] && break
  sleep 0.1
done
$bin/hearth --head "$head" devices >&2

$bin/hearth --head "$head" launch --model "$model" --ctx "$ctx" --streams 2 >&2
echo "demo: web chat and OpenAI API at $url  (e.g. curl $url/v1/models)" >&2

if [ -n "$prompt" ]; then
  printf '%s\n' "$prompt" | $bin/hearth chat --url "$url" "${max_tokens[@]}"
elif [ -t 0 ]; then
  $bin/hearth chat --url "$url" "${max_tokens[@]}"
else
  # Not a terminal: the prompt comes from stdin (`echo hi | scripts/demo.sh`); with none (a
  # script, `< /dev/null`), a default one, so that the demo still generates text.
  input=$(cat)
  if [ -z "$input" ]; then
    input="Once upon a time"
    echo "demo: no terminal and nothing on stdin: prompting with \"$input\"" >&2
  fi
  printf '%s\n' "$input" | $bin/hearth chat --url "$url" "${max_tokens[@]}"
fi
