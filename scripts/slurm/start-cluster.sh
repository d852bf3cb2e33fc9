#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine: munged, MariaDB + slurmdbd (accounting, which
# the Snakemake SLURM executor reads job states from with `sacct`), slurmctld and slurmd.
# For `snakemake --profile profiles/slurm` and tests/test_slurm.py on a workstation or in CI.
#
#   sudo scripts/slurm/start-cluster.sh      # Debian/Ubuntu; installs the packages on first use
#   scripts/slurm/stop-cluster.sh            # stops what this started
#
# Idempotent: running it again (re)writes the configuration and starts only what is not running.
# No systemd needed: the daemons are started directly (this works in containers and VMs).
# The node is `hostname -s` with the CPUs and memory that `slurmd -C` measures, in partition `debug`.
# Processes are tracked with linuxproc and not confined (task/none): cgroups are often not delegated
# inside containers, and one node for tests needs no confinement.
set -euo pipefail

CLUSTER=${MCNFLOW_SLURM_CLUSTER:-mcnflow}
ACCOUNT=${MCNFLOW_SLURM_ACCOUNT:-mcnflow}   # profiles/slurm/config.yaml submits with this account
PARTITION=debug
WAIT_S=${MCNFLOW_SLURM_WAIT_S:-60}          # how long to wait for each daemon to answer
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm

if [ "$(id -u)" != 0 ]; then
  exec sudo --preserve-env=MCNFLOW_SLURM_CLUSTER,MCNFLOW_SLURM_ACCOUNT,MCNFLOW_SLURM_WAIT_S "$0" "$@"
fi

started_at=$(date +%s)
say() { printf '[start-cluster %3ss] %s\n' "$(($(date +%s) - started_at))" "$*"; }
die() { echo "start-cluster: $*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every second until it succeeds.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  return 1
}

# running PIDFILE: the daemon whose pid the file holds is alive (a pid file left by a killed daemon
# may name a pid reused since, so the process's name must match the file's).
running() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(basename "$1" .pid)" ]
}

# --- packages ---------------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} with apt-get"
  # The packages' postinst scripts would start the daemons through an init system; we start them
  # ourselves below, so deny those starts for the duration of the install (unless a policy exists).
  own_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    own_policy=true
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if $own_policy; then rm -f /usr/sbin/policy-rc.d; fi
fi

# --- configuration ----------------------------------------------------------------------------
HOST=$(hostname -s)
# `slurmd -C` prints the node line SLURM would see, e.g.
# NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
node_hw=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')
[[ "$node_hw" == *CPUs=*RealMemory=* ]] || die "unexpected 'slurmd -C' output: $node_hw"

install -d -o slurm -g slurm -m 755 "$LOG_DIR" "$STATE_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
install -d -m 755 "$CONF_DIR"

changed=()
# put_conf FILE OWNER MODE: install stdin as FILE when its content differs; remember what changed.
put_conf() {
  local file=$1 owner=$2 mode=$3 tmp
  tmp=$(mktemp)
  cat > "$tmp"
  if ! cmp -s "$tmp" "$file"; then
    install -o "$owner" -g "$owner" -m "$mode" "$tmp" "$file"
    changed+=("$(basename "$file")")
  fi
  rm -f "$tmp"
}

put_conf "$CONF_DIR/slurm.conf" root 644 <<EOF
# Written by mcnflow scripts/slurm/start-cluster.sh: a one-node cluster for the workflow's SLURM profile.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
MpiDefault=none
# No cgroups: linuxproc follows a job's processes through their parent pids; task/none binds nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# A node that restarts comes back into service by itself.
ReturnToService=2
SchedulerType=sched/backfill
# CPUs and memory are both consumable, so jobs share the node by what they request.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# Accounting in slurmdbd: sacct answers for finished jobs, and only associated accounts may submit.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=associations
# Store each job's comment, where the Snakemake plugin names the rule and wildcards (sacct -o Comment).
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# Keep finished jobs in slurmctld's memory for 5 minutes (squeue shows them meanwhile).
MinJobAge=300
MaxArraySize=1001
NodeName=$HOST NodeAddr=127.0.0.1 $node_hw State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# Read only when a cgroup plugin is selected; kept so switching ProctrackType to proctrack/cgroup
# (where the host delegates cgroups) needs no other file.
put_conf "$CONF_DIR/cgroup.conf" root 644 <<EOF
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainRAMSpace=no
EOF

# slurmdbd's database password: kept from an earlier run, else made once.
db_pass=$(sed -n 's/^StoragePass=//p' "$CONF_DIR/slurmdbd.conf" 2>/dev/null || true)
[ -n "$db_pass" ] || db_pass=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
put_conf "$CONF_DIR/slurmdbd.conf" slurm 600 <<EOF
# Written by mcnflow scripts/slurm/start-cluster.sh.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
[ ${#changed[@]} -eq 0 ] || say "wrote ${changed[*]} in $CONF_DIR"

# A changed configuration reaches running daemons by restarting them.
restarted=()
if [ ${#changed[@]} -gt 0 ]; then
  for daemon in slurmd slurmctld slurmdbd; do
    pidfile=/run/$daemon.pid
    if running "$pidfile"; then
      say "restarting $daemon for the new configuration"
      pid=$(cat "$pidfile")
      kill "$pid"
      wait_for "$WAIT_S" "$daemon to stop" bash -c "! kill -0 $pid" || die "$daemon (pid $pid) did not stop"
      restarted+=("$daemon")
    fi
  done
fi

# --- munge ------------------------------------------------------------------------------------
install -d -o munge -g munge -m 700 /etc/munge
install -d -o munge -g munge -m 755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  say "created /etc/munge/munge.key"
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --force
fi
wait_for "$WAIT_S" munge bash -c 'munge -n | unmunge' || die "munged does not answer (see /var/log/munge/munged.log)"
say "munged up"

# --- MariaDB ----------------------------------------------------------------------------------
install -d -o mysql -g mysql -m 755 /run/mysqld
if ! mariadb-admin ping >/dev/null 2>&1; then
  if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  # setsid: the server outlives this script's session; loopback only.
  setsid nohup mariadbd --user=mysql --bind-address=127.0.0.1 --innodb-lock-wait-timeout=900 \
    >> "$LOG_DIR/mariadb.log" 2>&1 < /dev/null &
fi
wait_for "$WAIT_S" MariaDB mariadb-admin ping || die "MariaDB does not answer (see $LOG_DIR/mariadb.log)"
mariadb <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$db_pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$db_pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
say "MariaDB up (database slurm_acct_db)"

# --- slurmdbd and the accounts ----------------------------------------------------------------
running /run/slurmdbd.pid || slurmdbd
wait_for "$WAIT_S" slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer (see $LOG_DIR/slurmdbd.log)"
say "slurmdbd up"

has() { [ -n "$(sacctmgr -n -P "$@" 2>/dev/null)" ]; }
has list cluster "$CLUSTER" format=cluster || sacctmgr -i add cluster "$CLUSTER" >/dev/null
has list account "$ACCOUNT" format=account ||
  sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="mcnflow workflow" organization=mcnflow >/dev/null
# root (CI, tests as root) and whoever called sudo may submit with the account.
for user in root ${SUDO_USER:-}; do
  has list association cluster="$CLUSTER" account="$ACCOUNT" user="$user" format=user ||
    sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" defaultaccount="$ACCOUNT" >/dev/null
done

# --- slurmctld and slurmd ---------------------------------------------------------------------
recovered=false
if ! running /run/slurmctld.pid; then
  slurmctld
  [[ " ${restarted[*]} " == *" slurmctld "* ]] || recovered=true
fi
wait_for "$WAIT_S" slurmctld scontrol ping || die "slurmctld does not answer (see $LOG_DIR/slurmctld.log)"
say "slurmctld up"
running /run/slurmd.pid || slurmd
node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null; }
wait_for "$WAIT_S" "node $HOST" bash -c "sinfo -h -n $HOST -o %T | grep -Eq '^(idle|mixed|allocated)'" || {
  # A node left down/drained by an earlier run: bring it back once, then wait again.
  scontrol update nodename="$HOST" state=resume 2>/dev/null || true
  wait_for "$WAIT_S" "node $HOST" bash -c "sinfo -h -n $HOST -o %T | grep -Eq '^(idle|mixed|allocated)'" ||
    die "node $HOST is '$(node_state)', not idle (see $LOG_DIR/slurmd.log and $LOG_DIR/slurmctld.log)"
}
say "slurmd up"
if $recovered; then
  # Jobs recovered from an earlier controller's saved state (a session killed mid-run; the node
  # requeues them when it registers) have no Snakemake waiting for them: start with an empty queue.
  leftover=$(squeue -h -o %i | wc -l)
  if [ "$leftover" -gt 0 ]; then
    squeue -h -o %i | xargs -r scancel
    say "cancelled $leftover job(s) left from an earlier run"
  fi
fi

# --- summary ----------------------------------------------------------------------------------
echo
echo "SLURM $(sinfo -V | awk '{print $2}') cluster '$CLUSTER' is up in $(($(date +%s) - started_at)) s"
sinfo -h -o "  partition %P  nodes %N  state %T  cpus %c  memory %m MB  timelimit %l"
sacctmgr -n -P list association cluster="$CLUSTER" format=account,user |
  awk -F'|' '$2 != "" {print "  account " $1 "  user " $2}'
echo "  logs: $LOG_DIR/{slurmctld,slurmd,slurmdbd,mariadb}.log   stop: scripts/slurm/stop-cluster.sh"
