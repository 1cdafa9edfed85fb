#!/usr/bin/env bash
# Make Debian's Chromium available (/usr/bin/chromium) for the web console's browser tests, which
# drive it with Playwright (executable_path; Playwright's own browser download is not used).
# Idempotent.
set -euo pipefail

log() { echo "ensure-chromium: $*" >&2; }

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
log "installing chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium >/dev/null
if [ ! -x /usr/bin/chromium ]; then
  log "chromium could not be installed"
  exit 1
fi
log "$(/usr/bin/chromium --version 2>/dev/null || echo chromium) installed"
