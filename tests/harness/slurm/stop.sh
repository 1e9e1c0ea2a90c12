#!/usr/bin/env bash
# Stop the daemons started by start.sh, by PID file only (never by process name, so
# nothing else on the host is touched). Idempotent: a daemon that is not running is
# skipped. `--purge` also wipes job state, spool, logs and the MariaDB datadir so the
# next start.sh begins from scratch (the /etc/slurm symlinks are removed too).
#
# Env knobs: ATLAS_SLURM_BASE (default /tmp/atlas-slurm-test), as for start.sh.
set -uo pipefail

BASE=${ATLAS_SLURM_BASE:-/tmp/atlas-slurm-test}
RUN=$BASE/run

log() { echo "[atlas-slurm stop] $*" >&2; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

[[ -d $BASE ]] || { log "nothing to stop ($BASE does not exist)"; exit 0; }
# Serialise with start.sh (several test sessions may share the cluster).
exec 9>"$BASE/.ctl.lock"
flock -w 120 9 || { log "could not lock $BASE/.ctl.lock"; exit 1; }

stop_pidfile() { # stop_pidfile <name> <pidfile>
  local pf=$2 pid
  [[ -s $pf ]] || return 0
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "$1 did not exit, SIGKILL"; kill -KILL "$pid"; fi
  fi
  rm -f "$pf"
}

# Cancel our jobs first so slurmd does not leave orphaned job steps behind (they
# would keep test files open and hold the fake GPUs on the next start). Only when
# it is *our* slurmctld that answers: never scancel on a real cluster.
if alive "$RUN/slurmctld.pid" && command -v scancel >/dev/null; then
  SLURM_CONF=$BASE/etc/slurm.conf scancel --user=root >/dev/null 2>&1 || true
fi
# Order matters: slurmd before slurmctld (so it is not marked down and drained),
# slurmctld before slurmdbd (it flushes accounting records to it), slurmdbd before
# the database it writes to.
stop_pidfile slurmd    "$RUN/slurmd.pid"
stop_pidfile slurmctld "$RUN/slurmctld.pid"
stop_pidfile slurmdbd  "$RUN/slurmdbd.pid"
stop_pidfile mariadbd  "$BASE/mysql/mysqld.pid"
# munged is shared by the whole host: stop it only if start.sh started it.
if [[ -e $RUN/munged.started-by-us ]]; then
  stop_pidfile munged /run/munge/munged.pid
  rm -f "$RUN/munged.started-by-us"
fi

if [[ ${1:-} == --purge ]]; then
  rm -rf "$BASE/state" "$BASE/spool" "$BASE/log" "$BASE/mysql" "$BASE/run" "$BASE/fakegpu"
  for f in slurm.conf gres.conf slurmdbd.conf; do
    # only our own links, never a real site config
    [[ -L /etc/slurm/$f && $(readlink "/etc/slurm/$f") == "$BASE/etc/"* ]] && rm -f "/etc/slurm/$f"
  done
  log "purged state"
fi
exit 0
