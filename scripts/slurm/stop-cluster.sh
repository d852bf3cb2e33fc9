#!/usr/bin/env bash
# Stop the one-node SLURM cluster that scripts/slurm/start-cluster.sh started: slurmd, slurmctld,
# slurmdbd, MariaDB and munged, each by the pid its own pid file records. Jobs still queued or
# running are cancelled first. Configuration, accounting database and job history are kept, so
# start-cluster.sh brings the same cluster back. Safe to run when nothing is running.
set -uo pipefail

if [ "$(id -u)" != 0 ]; then exec sudo "$0" "$@"; fi

WAIT_S=${MCNFLOW_SLURM_WAIT_S:-30}

# stop NAME PIDFILE: SIGTERM the pid in PIDFILE and wait until it has exited.
stop() {
  local name=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || { echo "$name: not running (no $pidfile)"; return 0; }
  pid=$(cat "$pidfile")
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$name: not running (stale $pidfile)"
    rm -f "$pidfile"
    return 0
  fi
  kill "$pid"
  for _ in $(seq "$WAIT_S"); do
    kill -0 "$pid" 2>/dev/null || { echo "$name: stopped (pid $pid)"; rm -f "$pidfile"; return 0; }
    sleep 1
  done
  echo "$name: still running after ${WAIT_S}s (pid $pid)" >&2
  return 1
}

status=0
if command -v scancel >/dev/null && scontrol ping >/dev/null 2>&1; then
  squeue -h -o %i | xargs -r scancel
fi
stop slurmd /run/slurmd.pid || status=1
stop slurmctld /run/slurmctld.pid || status=1
stop slurmdbd /run/slurmdbd.pid || status=1
# MariaDB writes its pid file in its datadir's run directory.
stop mariadb /run/mysqld/mysqld.pid || status=1
stop munged /run/munge/munged.pid || status=1
exit $status
