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
  libvulkan-dev glslc                           # GPU stages: the Vulkan loader, shaders compiled at build time
  mesa-vulkan-drivers                           # lavapipe: Vulkan on the CPU, where the GPU tests run without a GPU
)

# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_ensure setup "${PACKAGES[@]}"

# shellcheck disable=SC2086
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${HEARTH_CMAKE_ARGS:-} >/dev/null
cmake --build build -j 2
echo "setup: built build/bin/hearth" >&2
