#!/bin/sh
# Which PyTorch build `make install` takes: prints the pip arguments that choose it (one line,
# empty when pip's defaults are right). The Makefile calls it; README "Installing: what each
# platform gets" says what each choice downloads.
#
#   TORCH=auto  (default) pip's own configuration decides when it names an index, find-links or a
#               constraint (pip.conf or PIP_* variables); otherwise Linux with an NVIDIA GPU gets
#               cuda, other Linux gets cpu, and macOS and Windows get PyPI's wheel (pip)
#   TORCH=cpu   Linux: PyTorch's CPU wheel index and constraints-cpu.txt (torch==X+cpu);
#               macOS and Windows: nothing added, PyPI's wheels there have no CUDA in them
#   TORCH=cuda  nothing added: PyPI's torch, which on Linux is the CUDA build (nvidia-* packages)
#   TORCH=pip   nothing added: whatever pip's configuration says
#
# Usage: scripts/pip_args.sh            the pip arguments
#        scripts/pip_args.sh --mode     the chosen mode: cpu, cuda or pip
#        scripts/pip_args.sh --describe one line for people: which build, how big a download
# Environment: TORCH (above); PY, the Python whose pip configuration counts (default python3).
set -eu

CPU_INDEX=https://download.pytorch.org/whl/cpu
root=$(cd "$(dirname "$0")/.." && pwd -P)

case $(uname -s) in
  Linux) os=linux ;;
  Darwin) os=macos ;;
  MINGW* | MSYS* | CYGWIN* | Windows*) os=windows ;;
  *) os=other ;;
esac

# pip's configuration, as pip reads it: its config files and PIP_* variables. Without a working
# pip, the variables and the usual config files are read here.
pip_settings() {
  if "${PY:-python3}" -m pip config list 2>/dev/null; then
    return
  fi
  env | sed -n 's/^PIP_\([A-Za-z_]*\)=.*/\1/p' | tr 'A-Z_' 'a-z-' | sed 's/^/:env:./; s/$/=/'
  [ "${PIP_CONFIG_FILE:-}" = /dev/null ] && return
  home=${HOME:-/nonexistent}
  {
    echo /etc/pip.conf
    echo "${XDG_CONFIG_DIRS:-/etc/xdg}" | tr : '\n' | sed 's|$|/pip/pip.conf|'
    echo "$home/.pip/pip.conf"
    echo "${XDG_CONFIG_HOME:-$home/.config}/pip/pip.conf"
    echo "$home/Library/Application Support/pip/pip.conf"
    echo "${PIP_CONFIG_FILE:-}"
  } | while IFS= read -r f; do
    if [ -n "$f" ] && [ -f "$f" ]; then
      sed -n 's/^[[:space:]]*\([a-z-]*\)[[:space:]]*[=:].*/file.\1=/p' "$f"
    fi
  done
}

pip_decides() {
  pip_settings | grep -Eq '^[^=]*\.(index-url|extra-index-url|find-links|no-index|constraint)='
}

# An NVIDIA GPU with its driver: nvidia-smi lists it. Without nvidia-smi on PATH, the driver's
# /proc entry counts.
has_nvidia_gpu() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -q '^GPU '
  else
    [ -e /proc/driver/nvidia/version ]
  fi
}

case ${TORCH:-auto} in
  auto)
    if pip_decides; then mode=pip
    elif [ $os = linux ] && has_nvidia_gpu; then mode=cuda
    elif [ $os = linux ]; then mode=cpu
    else mode=pip
    fi ;;
  cpu | cuda | pip) mode=$TORCH ;;
  *) echo "TORCH must be auto, cpu, cuda or pip; got '$TORCH'" >&2; exit 2 ;;
esac

torch=$(sed -n 's/^torch==\([^[:space:]]*\).*/\1/p' "$root/constraints.txt")

case ${1:-} in
  --mode) echo "$mode" ;;
  --describe)
    case $os:$mode in
      linux:cpu) echo "PyTorch $torch (CPU build from download.pytorch.org/whl/cpu; about 350 MB to download in all; TORCH=cuda for a GPU build)" ;;
      linux:cuda) echo "PyTorch $torch (CUDA build from PyPI; about 2.9 GB to download in all, most of it nvidia-* packages; TORCH=cpu for the CPU build)" ;;
      macos:*) echo "PyTorch $torch (PyPI build: CPU and Apple GPU (MPS); about 260 MB to download in all)" ;;
      windows:cuda) echo "PyTorch $torch (PyPI build, which is CPU-only on Windows: for CUDA see the README)" ;;
      windows:*) echo "PyTorch $torch (PyPI build, CPU-only; about 270 MB to download in all)" ;;
      *:pip) echo "PyTorch $torch (as the pip configuration of this machine chooses; TORCH=cpu or TORCH=cuda overrides)" ;;
      *) echo "PyTorch $torch (PyPI build)" ;;
    esac ;;
  "")
    if [ $mode = cpu ] && [ $os = linux ]; then
      if [ "$(pwd -P)" = "$root" ]; then c=constraints-cpu.txt; else c=$root/constraints-cpu.txt; fi
      echo "--extra-index-url $CPU_INDEX -c $c"
    else
      echo ""
    fi ;;
  *) echo "usage: $0 [--mode | --describe]" >&2; exit 2 ;;
esac
