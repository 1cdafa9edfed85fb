#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install docker.io (+ busybox-static for the test
# images) with apt-get when missing, start dockerd in the background when no engine answers.
# Idempotent: a second run with a live engine does nothing. Used by `make test` and CI.
set -euo pipefail

log() { echo "ensure-docker: $*" >&2; }

engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
# The test images are FROM scratch with a statically linked busybox (no registry pulls).
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if engine_answers; then
  log "engine already answers"
  exit 0
fi

if [ -z "${DOCKER_HOST:-}" ] || [ "${DOCKER_HOST}" = "unix:///var/run/docker.sock" ]; then
  log "starting dockerd"
  mkdir -p /var/log
  # A dockerd that died (machine reused, killed session) leaves its pid file and refuses to start.
  for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
      rm -f "$pidfile"
    fi
  done
  # iptables may be unusable inside a sandbox; stage containers run with network "none"
  # unless they ask, so the engine works without NAT rules.
  storage_driver="${FORGELINE_DOCKER_STORAGE_DRIVER:-}"
  args=(--host=unix:///var/run/docker.sock)
  if [ -n "$storage_driver" ]; then args+=(--storage-driver="$storage_driver"); fi
  if ! iptables -L >/dev/null 2>&1; then args+=(--iptables=false --ip6tables=false --bridge=none); fi
  nohup dockerd "${args[@]}" >/var/log/forgeline-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    if engine_answers; then log "engine up"; exit 0; fi
    sleep 0.5
  done
  if [ -z "$storage_driver" ]; then
    # overlayfs on overlayfs is refused in some sandboxes: retry with vfs (slow but works).
    log "retrying with the vfs storage driver"
    pkill -F /var/run/docker.pid 2>/dev/null || true
    sleep 1
    FORGELINE_DOCKER_STORAGE_DRIVER=vfs exec "$0"
  fi
  tail -n 30 /var/log/forgeline-dockerd.log >&2 || true
fi
log "no Docker engine answers"
exit 1
