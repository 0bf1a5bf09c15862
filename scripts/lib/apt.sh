# shellcheck shell=bash
# Sourced by the scripts that install their own Debian packages (setup.sh, fuzz.sh,
# build-arm64.sh), so that each says only what it needs.
#
# apt_ensure TAG PACKAGE...: installs those of PACKAGE... that dpkg does not list as installed
# (apt-get update + install, non-interactive, through sudo when not root) and says which on
# stderr after "TAG: ". Does nothing when all are there.
apt_ensure() {
  local tag=$1
  shift
  local missing=() p sudo=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "$tag: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
