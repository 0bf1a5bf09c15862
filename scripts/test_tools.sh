#!/usr/bin/env bash
# What tests/http_test.cpp needs besides the build: Node.js and npm (the official OpenAI client,
# installed from tests/openai/package-lock.json with `npm ci`) and Debian's chromium (the web
# chat page, driven headless). Called by scripts/test.sh. Best effort: where something cannot be
# installed, the checks that need it are skipped with a message, and this script still succeeds.
set -uo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
missing=()
# A Node.js from elsewhere (e.g. NodeSource) brings its own npm: only add what is absent.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-tools: installing ${missing[*]}" >&2
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "test-tools: could not install ${missing[*]}: the HTTP tests skip what needs them" >&2
  fi
fi

if command -v npm >/dev/null; then
  npm ci --prefix tests/openai --no-audit --no-fund --loglevel=error >/dev/null ||
    echo "test-tools: npm ci --prefix tests/openai failed: the OpenAI client check is skipped" >&2
fi
exit 0
