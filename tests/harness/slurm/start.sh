#!/usr/bin/env bash
# Bring up a real one-node SLURM cluster for Atlas's tests:
#   munge + MariaDB + slurmdbd (so `sacct` works) + slurmctld + slurmd,
# with fake GPUs advertised as gres/gpu. No systemd needed; every daemon is started
# directly and tracked by a PID file under $ATLAS_SLURM_BASE/run (stop.sh uses them).
#
# Idempotent: daemons that are already running are left alone, and the account /
# user records are only added when missing. Needs root and the packages installed
# by install.sh. Adapted from a recipe verified on Debian 12 (slurm 22.05).
#
# Env knobs:
#   ATLAS_SLURM_BASE     state/log/config dir                (default /tmp/atlas-slurm-test)
#   ATLAS_SLURM_GPUS     fake GPUs (gres/gpu) to advertise    (default 2; 0 = none)
#   ATLAS_SLURM_CPUS     CPUs to advertise                    (default: real count;
#                        more = oversubscribe the machine)
#   ATLAS_SLURM_DB_PORT  TCP port of the private MariaDB      (default 3306)
#
# Cluster facts the tests rely on: cluster "ci", partition "debug" (default),
# account "ci_acct" with user root in it.
set -euo pipefail

BASE=${ATLAS_SLURM_BASE:-/tmp/atlas-slurm-test}
NGPU=${ATLAS_SLURM_GPUS:-2}
DBPORT=${ATLAS_SLURM_DB_PORT:-3306}
ETC=$BASE/etc RUN=$BASE/run LOG=$BASE/log
CLUSTER=ci ACCOUNT=ci_acct PARTITION=debug DBPASS=slurmpw

log() { echo "[atlas-slurm start] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() { # wait_for <seconds> <cmd...>
  local t=$(( $1 * 10 )); shift
  for ((i = 0; i < t; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "timeout waiting for: $*"; return 1
}
show_log() { # on failure, show the tail of a daemon log so the reason is visible
  [[ -s $1 ]] && { log "--- tail of $1"; tail -n 15 "$1" >&2; }
  return 0
}

[[ $EUID -eq 0 ]] || die "must run as root"
for b in slurmctld slurmd sinfo sacctmgr munged mariadbd slurmdbd; do
  command -v "$b" >/dev/null 2>&1 || die "$b not found: run tests/harness/slurm/install.sh first"
done
mkdir -p "$ETC" "$RUN" "$LOG" "$BASE/state" "$BASE/spool" /etc/slurm

# start.sh and stop.sh may be called by several test sessions at once: serialise them.
# Trap: every daemon started below must get `9>&-`, or it inherits the locked fd
# and holds the lock for its whole life (the next start.sh/stop.sh then hangs).
exec 9>"$BASE/.ctl.lock"
flock -w 120 9 || die "could not lock $BASE/.ctl.lock"

# Trap: the snakemake jobstep plugin strips every SLURM_* variable, SLURM_CONF
# included, before its inner `srun`, so a config passed via SLURM_CONF is lost
# inside the job ("Could not establish a configuration source"). The config must
# therefore live at the compiled-in default /etc/slurm/slurm.conf; we symlink ours
# there. Refuse to clobber a real (non-symlink) site config.
link_etc() { # link_etc <our file> <name under /etc/slurm>
  local dst=/etc/slurm/$2
  if [[ -e $dst && ! -L $dst ]]; then
    die "$dst is a real file (a site SLURM config?); refusing to replace it"
  fi
  ln -sfn "$1" "$dst"
}
# Because of that global link there can be only one such cluster per machine (the
# ports 6817-6819 are fixed too): refuse to hijack one running from another base dir.
if [[ -L /etc/slurm/slurm.conf ]]; then
  other=$(readlink /etc/slurm/slurm.conf); other=${other%/etc/slurm.conf}
  if [[ $other != "$BASE" ]] && alive "$other/run/slurmctld.pid"; then
    die "another test cluster (base $other) is running; stop it first: ATLAS_SLURM_BASE=$other $(dirname "$0")/stop.sh"
  fi
fi
write_if_changed() { # write_if_changed <file>  (content on stdin): keeps mtime stable
  local tmp; tmp=$(mktemp "$1.XXXXXX")
  cat > "$tmp"
  if cmp -s "$tmp" "$1" 2>/dev/null; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

# ---------------------------------------------------------------- config
# Take the real CPU count and memory from slurmd itself, so the node never
# registers with less than it claims (slurmd would drain it as "Low RealMemory").
read -r HW_CPUS HW_MEM < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
[[ -n ${HW_CPUS:-} && -n ${HW_MEM:-} ]] || die "could not parse 'slurmd -C'"
CPUS=${ATLAS_SLURM_CPUS:-$HW_CPUS}
GRES_NODE="" GRES_GLOBAL=""
if (( NGPU > 0 )); then
  # Trap: without GRES configured, sbatch rejects both `--gpus=1` (what snakemake
  # makes of `resources: gpu=1`) and `--gres=gpu:1`. Fake the GPUs with device
  # files that are links to /dev/null; slurmd then sets CUDA_VISIBLE_DEVICES for
  # jobs that get one. AutoDetect=off: there is no NVML to ask.
  mkdir -p "$BASE/fakegpu"
  for ((g = 0; g < NGPU; g++)); do ln -sfn /dev/null "$BASE/fakegpu/nvidia$g"; done
  GRES_NODE="Gres=gpu:$NGPU" GRES_GLOBAL="GresTypes=gpu"
  printf 'AutoDetect=off\nNodeName=localhost Name=gpu File=%s/fakegpu/nvidia[0-%d]\n' \
    "$BASE" $((NGPU - 1)) | write_if_changed "$ETC/gres.conf"
  link_etc "$ETC/gres.conf" gres.conf
else
  [[ -L /etc/slurm/gres.conf ]] && rm -f /etc/slurm/gres.conf
fi
OVERRIDE=""; (( CPUS != HW_CPUS )) && OVERRIDE="SlurmdParameters=config_overrides"

write_if_changed "$ETC/slurm.conf" <<EOF
# Generated by tests/harness/slurm/start.sh: Atlas's one-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=localhost
# No slurm system user needed: everything runs as root in the test container.
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# No cgroups / systemd in a container: track processes by /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
$GRES_GLOBAL
# Trap: the snakemake slurm plugin polls job status with sacct whenever sacct is
# installed; without slurmdbd every poll fails and snakemake waits forever. So we
# run real accounting (slurmdbd + MariaDB); tracking gres/gpu also lets the tests
# check AllocTRES for the GPU.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
# Reject jobs whose --account does not exist (like real clusters do).
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# Store --comment in the database: snakemake's slurm plugin puts the rule name
# there ("rule_<name>"), so sacct -o Comment tells which job ran which rule.
# (No backticks or $ in comments here: this heredoc is expanded by bash.)
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
MpiDefault=none
# A node that was "down" when slurmd was stopped comes back by itself on restart.
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# Keep finished jobs visible to squeue for a while: needed if a profile falls back to
# slurm-status-command: squeue (>= 3 x slurm-init-seconds-before-status-checks).
MinJobAge=300
KillWait=5
Waittime=0
DefMemPerCPU=256
$OVERRIDE
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$HW_MEM $GRES_NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
link_etc "$ETC/slurm.conf" slurm.conf
export SLURM_CONF=/etc/slurm/slurm.conf

# ---------------------------------------------------------------- munge
# The Debian package normally creates the key; create one if it did not.
if [[ ! -s /etc/munge/munge.key ]]; then
  mkdir -p /etc/munge
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
# No systemd => nobody creates munged's runtime dirs (tmpfs /run is empty after boot).
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged"
  # munged refuses to run as root; run it as its own user.
  runuser -u munge -- /usr/sbin/munged 9>&-
  # Remember that we started it, so stop.sh does not kill a munged that was
  # already there (a real host may use it for other things).
  touch "$RUN/munged.started-by-us"
  wait_for 10 bash -c 'munge -n | unmunge' || { show_log /var/log/munge/munged.log; die "munged did not come up"; }
fi

# ---------------------------------------------------------------- mariadb + slurmdbd
# A private MariaDB (own datadir, socket, pid file) so the host's database, if any,
# is neither used nor touched. It listens on 127.0.0.1 because slurmdbd talks TCP.
MYSOCK=$RUN/mysqld.sock
mkdir -p "$BASE/mysql"; chown mysql:mysql "$BASE/mysql"
# mariadbd runs as user mysql and must create its socket in $RUN.
chmod 1777 "$RUN"
write_if_changed "$ETC/my.cnf" <<EOF
[mysqld]
datadir=$BASE/mysql
socket=$MYSOCK
pid-file=$BASE/mysql/mysqld.pid
log-error=$BASE/mysql/mysqld.err
bind-address=127.0.0.1
port=$DBPORT
user=mysql
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_lock_wait_timeout=900
EOF
if ! mariadb-admin --socket="$MYSOCK" ping >/dev/null 2>&1; then
  if [[ ! -d $BASE/mysql/mysql ]]; then
    log "initialising MariaDB datadir"
    mariadb-install-db --user=mysql --datadir="$BASE/mysql" --skip-test-db \
      --auth-root-authentication-method=socket >"$LOG/mysql-init.log" 2>&1 ||
      { show_log "$LOG/mysql-init.log"; die "mariadb-install-db failed"; }
  fi
  log "starting mariadbd"
  # setsid + closed stdio: the daemon must not hold the caller's pipes open
  # (pytest's subprocess.run would otherwise wait for it forever).
  # (setsid is not a process-group leader here, so it execs: $! is mariadbd itself.)
  setsid mariadbd --defaults-file="$ETC/my.cnf" </dev/null >/dev/null 2>&1 9>&- &
  mpid=$!
  for ((i = 0; i < 300; i++)); do # up to 30 s, but give up at once if it died
    mariadb-admin --socket="$MYSOCK" ping >/dev/null 2>&1 && break
    kill -0 "$mpid" 2>/dev/null || break
    sleep 0.1
  done
  mariadb-admin --socket="$MYSOCK" ping >/dev/null 2>&1 ||
    { show_log "$BASE/mysql/mysqld.err"; die "mariadbd did not come up (port $DBPORT taken?)"; }
fi
mariadb --socket="$MYSOCK" -e "
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
write_if_changed "$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DBPORT
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
# slurmdbd refuses to start when its config (it holds a password) is readable by others.
chmod 600 "$ETC/slurmdbd.conf"
link_etc "$ETC/slurmdbd.conf" slurmdbd.conf
if ! alive "$RUN/slurmdbd.pid"; then log "starting slurmdbd"; slurmdbd 9>&-; fi
wait_for 30 sacctmgr -n list cluster || { show_log "$LOG/slurmdbd.log"; die "slurmdbd did not come up"; }
# The cluster, account and user must exist in the database *before* slurmctld
# registers, or jobs with --account are rejected (and snakemake's slurm plugin
# validates the account with sacctmgr before submitting).
sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER ||
  sacctmgr -i add cluster $CLUSTER >/dev/null
sacctmgr -n -P list account format=account | grep -qx $ACCOUNT ||
  sacctmgr -i add account $ACCOUNT Cluster=$CLUSTER Description=ci Organization=ci >/dev/null
sacctmgr -n -P -s list user root format=account | grep -qx $ACCOUNT ||
  sacctmgr -i add user root Account=$ACCOUNT Cluster=$CLUSTER >/dev/null

# ---------------------------------------------------------------- slurmctld + slurmd
if ! alive "$RUN/slurmctld.pid"; then log "starting slurmctld"; slurmctld -i 9>&-; fi
wait_for 30 scontrol ping || { show_log "$LOG/slurmctld.log"; die "slurmctld did not come up"; }
if ! alive "$RUN/slurmd.pid"; then log "starting slurmd"; slurmd -N localhost 9>&-; fi
# The node stays "unknown" until slurmd has registered; only then can jobs run.
wait_for 60 bash -c 'sinfo -h -N -o %t | grep -Eq "^(idle|mix|alloc)"' ||
  { show_log "$LOG/slurmd.log"; sinfo -N -l >&2 || true; die "node did not become idle"; }
sinfo >&2
