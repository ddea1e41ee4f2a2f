#!/usr/bin/env bash
# A throwaway single-node Slurm cluster on this host, for running `srun` jobs in tests and demos.
#
#   scripts/slurm-local.sh start DIR   # munged + slurmctld + slurmd, all state under DIR
#   scripts/slurm-local.sh env DIR     # prints `export SLURM_CONF=...` for clients (srun, sinfo)
#   scripts/slurm-local.sh stop DIR    # kills the three daemons and removes DIR
#
# Everything lives under DIR (created if missing; `start` prints the exports to use): its own
# munge key and socket, slurm.conf, spool and state directories, logs and pid files. The
# daemons listen on ports picked free at start. Nothing in /etc, /run or /var is read or
# written, so a machine that already runs Slurm or munge is left alone: clients reach this
# cluster only with SLURM_CONF pointing at DIR/slurm.conf.
#
# The node is this host with CPUs=nproc. Jobs with more tasks than cores (4 ranks on 2 cores)
# need `srun --overcommit`. The daemons run as the calling user; Slurm launches tasks as that
# user too, so root (as in CI) or a user running their own jobs both work.
#
# `start` waits (up to 60 s) until `sinfo` reports the node idle and fails otherwise, leaving
# the logs in DIR for a look; `stop` is safe to call on a half-started or already-stopped DIR.
set -euo pipefail

usage() {
  echo "usage: $0 start|env|stop DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
action=$1
dir=$2

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "slurm-local: $tool not found (run scripts/setup.sh)" >&2
      exit 1
    }
  done
}

# A TCP port nobody listens on now (the daemons bind it a moment later).
free_port() {
  python3 - <<'EOF' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

stop_pid_file() {
  local pid_file=$1
  [ -s "$pid_file" ] || return 0
  local pid
  pid=$(cat "$pid_file")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

case $action in
start)
  need munged slurmctld slurmd sinfo srun
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # munged refuses keys and sockets in directories others can write to.
  chmod 0700 "$dir"
  mkdir -p "$dir"/{munge,spool,state,log}
  chmod 0700 "$dir"/munge

  # munge: a fresh 1024-byte key, a private socket.
  if [ ! -s "$dir/munge/munge.key" ]; then
    (umask 077 && head -c 1024 /dev/urandom >"$dir/munge/munge.key")
  fi
  munged --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed" \
    --force

  user=$(id -un)
  node=$(hostname -s)
  ctld_port=$(free_port)
  slurmd_port=$(free_port)
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
  cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: a single-node cluster whose state is all in $dir.
ClusterName=tessera-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups, no accounting: nothing outside $dir is needed or touched.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
LaunchParameters=use_interactive_step
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  export SLURM_CONF="$dir/slurm.conf"
  # -i: ignore any state a previous cluster left in $dir/state.
  slurmctld -i -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF" -N "$node"

  for _ in $(seq 600); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)
    if [ "$state" = "idle" ]; then
      echo "export SLURM_CONF=$SLURM_CONF"
      exit 0
    fi
    sleep 0.1
  done
  echo "slurm-local: the node did not become idle within 60 s (state '${state:-none}'); logs in $dir/log" >&2
  exit 1
  ;;
env)
  echo "export SLURM_CONF=$(cd "$dir" && pwd)/slurm.conf"
  ;;
stop)
  [ -d "$dir" ] || exit 0
  # Cancel what still runs (a test that timed out), so no job step outlives the cluster, then
  # give slurmd up to 10 s to end the steps' processes.
  if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    export SLURM_CONF="$dir/slurm.conf"
    if timeout 10 scancel -u "$(id -un)" 2>/dev/null; then
      for _ in $(seq 100); do
        [ -z "$(timeout 5 squeue -h -t running,completing -o %i 2>/dev/null || true)" ] && break
        sleep 0.1
      done
    fi
  fi
  stop_pid_file "$dir/slurmd.pid"
  stop_pid_file "$dir/slurmctld.pid"
  stop_pid_file "$dir/munge/munged.pid"
  rm -rf "$dir"
  ;;
*)
  usage
  ;;
esac
