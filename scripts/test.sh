#!/usr/bin/env bash
# The test command: make sure Postgres and Redis run, install the project into .venv, type-check the
# packages, run the whole suite. Needs only Python 3.11 + pip and the Postgres/Redis servers installed;
# exits with mypy's status when the type check fails, pytest's otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379

log() { printf '[ci] %s\n' "$*"; }

wait_until() {  # wait_until <seconds> <command...>
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then return 1; fi
        sleep 1
    done
}

postgres_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -h "$PG_HOST" -p "$PG_PORT" -q
    else
        (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null
    fi
}

redis_up() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h "$PG_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
    else
        (exec 3<>"/dev/tcp/$PG_HOST/$REDIS_PORT") 2>/dev/null
    fi
}

ensure_postgres() {
    if postgres_up; then log "postgres is up"; return; fi
    log "starting postgres"
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_until 60 postgres_up || { log "postgres did not come up"; exit 1; }
}

ensure_test_database() {
    command -v psql >/dev/null 2>&1 || return 0
    if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1; then
        log "creating database 'test'"
        psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -c "CREATE DATABASE test" >/dev/null \
            || log "warning: could not create database 'test'"
    fi
}

ensure_redis() {
    if redis_up; then log "redis is up"; return; fi
    log "starting redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no
    wait_until 30 redis_up || { log "redis did not come up"; exit 1; }
}

ensure_venv() {
    local python
    python="$(command -v python3.11 || command -v python3)"
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv with $python"
        "$python" -m venv .venv
    fi
    # shellcheck disable=SC1091
    source .venv/bin/activate
    python -m pip install --quiet --upgrade pip
    log "installing the project (.[dev])"
    python -m pip install --quiet -e '.[dev]'
}

# --- dashboard browser test (tests/service/test_dashboard.py) -------------------------------
# Headless Chromium from the distribution; Playwright drives it (never `playwright install`).
ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then log "chromium is installed"; return; fi
    log "installing chromium (apt-get)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null \
        || log "warning: could not install chromium; the dashboard test will fail"
}
# --- end of the dashboard block --------------------------------------------------------------

# The python reward's jail (remix_engine/sandbox_jail.py) needs bubblewrap; its seccomp filter libseccomp.
ensure_sandbox_tool() {
    if command -v bwrap >/dev/null 2>&1; then log "bubblewrap is installed"; return; fi
    log "installing bubblewrap (apt-get)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq bubblewrap libseccomp2 >/dev/null \
        || { log "could not install bubblewrap; the sandbox tests cannot run"; exit 1; }
}

ensure_postgres
ensure_test_database
ensure_redis
ensure_chromium
ensure_sandbox_tool
ensure_venv

# mypy reads its packages and strictness from [tool.mypy] in pyproject.toml; a type error fails the
# command before any test runs.
log "type-checking (mypy)"
set +e
python -m mypy
status=$?
set -e
if [ "$status" -ne 0 ]; then
    log "type check failed (mypy exited with status $status)"
    exit "$status"
fi

log "running the test suite"
set +e
python -m pytest -q "$@"
status=$?
set -e
log "pytest exited with status $status"
exit "$status"
