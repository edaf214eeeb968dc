#!/usr/bin/env bash
# Make sure each COMMAND:PACKAGE pair's command exists, installing the Debian package when not.
# As root on a machine with apt-get the missing packages are installed; elsewhere this stops and
# names them, so that no test or benchmark has to skip for a missing tool.
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
else
  echo "missing Debian packages: ${missing[*]} (install them: apt-get install ${missing[*]})" >&2
  exit 1
fi
