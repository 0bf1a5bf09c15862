# Cross-compiles hearth for 64-bit ARM Linux (Raspberry Pi OS 64-bit, Jetson, ...) on a Debian
# x86-64 host, with Debian's cross compiler (g++-aarch64-linux-gnu) and the arm64 libraries
# installed through multiarch (dpkg --add-architecture arm64): no sysroot, the libraries live in
# /usr/lib/aarch64-linux-gnu beside the host's. scripts/build-arm64.sh installs all of it.
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Libraries and their CMake/pkg-config files: the arm64 ones only. Programs (capnp, the code
# generator run during the build) are the host's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# The schema compiler runs on the host while the build compiles: the host's capnp and
# capnpc-c++, whatever the arm64 CapnProto package's CMake config says.
set(CAPNP_EXECUTABLE /usr/bin/capnp CACHE FILEPATH "host capnp")
set(CAPNPC_CXX_EXECUTABLE /usr/bin/capnpc-c++ CACHE FILEPATH "host capnpc-c++")

# Test binaries run under user-mode emulation (Debian qemu-user); ctest uses this for
# add_test commands that name a target. `-L /`: the arm64 loader and libc are multiarch's
# (/lib/aarch64-linux-gnu, libc6:arm64), like every other library. With -L
# /usr/aarch64-linux-gnu, qemu takes the cross toolchain's ld.so but still finds multiarch's
# libc.so.6, a different build of glibc, and a program hangs when it starts its first thread.
find_program(HEARTH_QEMU_AARCH64 qemu-aarch64)
if(HEARTH_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${HEARTH_QEMU_AARCH64};-L;/)
endif()
