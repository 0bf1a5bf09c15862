#!/usr/bin/env bash
# Cross-builds hearth for 64-bit ARM Linux into build-arm64/ (binaries for a Raspberry Pi OS
# 64-bit, Jetson or other aarch64 board), installing what is missing first: Debian's cross
# compiler, qemu-user (to run the tests here), and the arm64 libraries through multiarch.
# Idempotent and non-interactive; safe to run again. Debian 12 (bookworm) x86-64 host.
#   scripts/build-arm64.sh                 # everything (hearth, hearthd, hearth_tests)
#   scripts/build-arm64.sh hearthd         # extra arguments are build targets
#   HEARTH_CMAKE_ARGS="-DHEARTH_WERROR=ON" HEARTH_JOBS=1 scripts/build-arm64.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Programs run on the host: the compiler, the emulator, the build tools and the Cap'n Proto
# schema compiler (the build generates code with it). Header-only libraries are the host's too:
# the cross compiler reads /usr/include.
HOST_PACKAGES=(
  g++-aarch64-linux-gnu cmake ninja-build pkg-config
  qemu-user                                     # qemu-aarch64: runs the tests and the mixed cluster
  capnproto                                     # capnp, capnpc-c++
  libboost-dev libcli11-dev nlohmann-json3-dev doctest-dev cppzmq-dev
)
# Libraries linked into the binaries: arm64 builds, beside the host's (Multi-Arch: same).
ARM64_PACKAGES=(
  libspdlog-dev:arm64 libfmt-dev:arm64 libzmq3-dev:arm64 libcapnp-dev:arm64
  libxxhash-dev:arm64 libpcre2-dev:arm64 libedit-dev:arm64
)

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "build-arm64: dpkg --add-architecture arm64" >&2
  $sudo dpkg --add-architecture arm64  # apt_ensure's update then fetches the arm64 lists
fi
# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_ensure build-arm64 "${HOST_PACKAGES[@]}" "${ARM64_PACKAGES[@]}"

# No GPU stages: the cross build has no arm64 Vulkan loader (a native arm64 build with
# libvulkan-dev and glslc has them, as on x86-64).
# shellcheck disable=SC2086
cmake -S . -B build-arm64 -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_VULKAN=OFF \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" ${HEARTH_CMAKE_ARGS:-} >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build build-arm64 -j "${HEARTH_JOBS:-2}" "${targets[@]}"
echo "build-arm64: built build-arm64/bin (aarch64)" >&2
