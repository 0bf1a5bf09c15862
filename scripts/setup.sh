#!/usr/bin/env bash
# Installs the Debian packages hearth needs (only those missing) and builds Release into build/.
# Idempotent and non-interactive; safe to run again. Debian 12 (bookworm).
#   HEARTH_CMAKE_ARGS="-DHEARTH_WERROR=ON" scripts/setup.sh   # extra CMake options
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config  # toolchain
  libspdlog-dev libfmt-dev                      # logs
  libcli11-dev nlohmann-json3-dev               # command line, JSON
  doctest-dev                                   # tests
  libzmq3-dev cppzmq-dev                        # ZeroMQ sockets between daemons
  capnproto libcapnp-dev                        # the wire schema
  libboost-dev                                  # Asio: discovery, signals; Beast: the HTTP gateway
  libxxhash-dev                                 # weight chunk checksums, model hashes
  libpcre2-dev                                  # byte-level BPE pre-tokenizer rules
  libedit-dev                                   # line editing and history in `hearth chat` (BSD)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# shellcheck disable=SC2086
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${HEARTH_CMAKE_ARGS:-} >/dev/null
cmake --build build -j 2
echo "setup: built build/bin/hearth" >&2
