#!/usr/bin/env bash
# Install the Debian packages the one-node test SLURM cluster needs (see start.sh).
# Idempotent: does nothing when every package is already installed.
# Exits non-zero with a message on stderr when it cannot install them (not root,
# no apt-get, no network to the package mirror, ...), so that the pytest fixture
# can report *why* the slurm tests cannot run instead of skipping them.
set -euo pipefail

PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

log() { echo "[atlas-slurm install] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

installed() { # installed <pkg>: true when dpkg reports it fully installed
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
else
  die "dpkg-query not found: this harness supports Debian/Ubuntu only (need: ${PKGS[*]})"
fi

if (( ${#missing[@]} == 0 )); then
  log "all packages already installed"
  exit 0
fi

[[ $EUID -eq 0 ]] || die "must run as root to install: ${missing[*]}"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
# No systemd in containers: stop the maintainer scripts from trying to start the
# daemons (policy-rc.d exit 101 = "action forbidden"); start.sh starts them itself
# with our own config. Only installed for the duration of this script.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $POLICY ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$POLICY"; chmod 755 "$POLICY"; created_policy=1
fi
cleanup() { (( created_policy )) && rm -f "$POLICY"; return 0; }
trap cleanup EXIT

log "installing: ${missing[*]}"
# The package lists may be empty (fresh container) or stale: update once, then install. Another
# apt run (the browser tests install Chromium, maybe at the same time in another pytest worker)
# holds apt's lock for a while: wait for it rather than fail.
apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null 2>&1 || log "warning: apt-get update failed; trying the install anyway"
if ! apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
     -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
     "${missing[@]}" >/tmp/atlas-slurm-apt.log 2>&1; then
  tail -n 20 /tmp/atlas-slurm-apt.log >&2
  die "apt-get install failed (full log: /tmp/atlas-slurm-apt.log)"
fi

for p in "${PKGS[@]}"; do installed "$p" || die "package $p still not installed after apt-get"; done
log "done"
