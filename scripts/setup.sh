#!/usr/bin/env bash
# Installs the system packages tessera builds against (LLVM/MLIR 22, OpenMPI, COIN-OR CBC for
# the e-graph's MIP extraction), the Slurm daemons and client plus munge that the srun tests
# run a throwaway cluster with (scripts/slurm-local.sh), and headless Chromium, which the
# plan-report test opens `tessera plan --report` pages in to check for console errors, only
# when missing. Debian's slurmctld/slurmd services stay down
# without /etc/slurm/slurm.conf, which this script never writes.
# Idempotent: a second run on a set-up machine does nothing and prints one line.
set -euo pipefail

packages=(
  llvm-22-dev libmlir-22-dev mlir-22-tools libpolly-22-dev libzstd-dev
  libclang1-22 libclang-common-22-dev
  libopenmpi-dev openmpi-bin
  slurmctld slurmd slurm-client munge
  unzip
  coinor-libcbc-dev
  chromium
)

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: system packages present"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
