#!/usr/bin/env bash
# Make the build sandbox work on this machine: bubblewrap (namespaces), socat (the in-sandbox
# forwarder to the egress proxy), util-linux (setpriv, unshare), iproute2 (each sandbox's eth0,
# test network namespaces), python3-venv (virtualenvs of Python stages). Checks that a trivial
# sandbox runs.
# Idempotent; used by `make run`, `make test`, CI.
set -euo pipefail

log() { echo "ensure-sandbox: $*" >&2; }

need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# Python stages make their virtualenvs with the host's python3 (venv + ensurepip).
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing ${need[*]} and not root: install them, or the sandbox runner is unavailable"
    exit 1
  fi
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if bwrap --unshare-pid --unshare-net --ro-bind /usr /usr --symlink usr/bin /bin \
    --symlink usr/lib /lib --symlink usr/lib64 /lib64 --proc /proc --dev /dev \
    -- /bin/true 2>/tmp/forgeline-bwrap-check.log; then
  log "bubblewrap sandbox works"
else
  log "bubblewrap cannot create namespaces here: $(cat /tmp/forgeline-bwrap-check.log)"
  exit 1
fi
