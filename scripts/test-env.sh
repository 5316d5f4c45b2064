#!/usr/bin/env bash
# Bring up what the test suite needs, as far as this machine allows, then say what will be
# skipped and why. Used by `make test` and so by `.ci/run` (which runs `make test`).
#
#   PostgreSQL  127.0.0.1:5432: the local cluster is started when it is down (else the suite
#               starts an embedded server from initdb)
#   Docker      DOCKER_HOST, else the private socket unix:///tmp/rb-docker.sock, where a
#               `dockerd --bridge=none --iptables=false` is started (Debian's docker.io
#               installed first when absent)
#   Compose     `docker compose` or `docker-compose` (Debian's docker-compose installed when
#               neither is), for the deployment example's tests
#   Redis       127.0.0.1:6379, `redis-server` started (Debian's redis-server installed first
#               when absent)
#   image base  debian:trixie-slim for the image tests, made by debootstrap when absent (by
#               scripts/build-image.sh, during the tests)
#
# Installing and starting dockerd need root; without it nothing is installed, and what cannot
# be had is reported. Under CI=true a missing Docker engine is an error (its tests must run).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTEST="${PYTEST:-.venv/bin/pytest}"
CI_SOCKET=unix:///tmp/rb-docker.sock
log() { printf '[test-env] %s\n' "$*"; }
is_root() { [ "$(id -u)" = 0 ]; }
declare -a SKIPS=()  # "marker|reason"

wait_for() {  # $1: seconds, rest: a command that succeeds once the thing is up
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

apt_install() {
  is_root || return 1
  log "installing Debian's $*"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } \
    >/tmp/rb-test-env-apt.log 2>&1 || { tail -n 20 /tmp/rb-test-env-apt.log; return 1; }
}

# --- PostgreSQL ----------------------------------------------------------------------------

postgres_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

ensure_postgres() {
  if postgres_up; then log "PostgreSQL: up on 127.0.0.1:5432"; return; fi
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    log "PostgreSQL: down; starting cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    if wait_for 30 postgres_up; then log "PostgreSQL: up on 127.0.0.1:5432"; return; fi
  fi
  if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null; then
    log "PostgreSQL: none on 127.0.0.1:5432; the suite starts an embedded server (initdb)"
  else
    log "PostgreSQL: none on 127.0.0.1:5432 and no initdb: the suite cannot run" \
        "(set TEST_DATABASE_URL, or install postgresql)"
    exit 1
  fi
}

# --- Docker --------------------------------------------------------------------------------

docker_answers() { docker -H "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

ensure_docker() {
  local host
  for host in ${DOCKER_HOST:-} "$CI_SOCKET" unix:///var/run/docker.sock; do
    if docker_answers "$host"; then log "Docker: engine at $host"; return; fi
  done
  if ! is_root; then
    SKIPS+=("docker|no Docker engine answers, and starting dockerd needs root")
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io || { SKIPS+=("docker|docker.io could not be installed"); return; }
  fi
  log "Docker: starting dockerd on $CI_SOCKET (log /tmp/rb-dockerd.log)"
  mkdir -p /tmp/rb-docker
  nohup dockerd --host "$CI_SOCKET" --data-root /tmp/rb-docker --pidfile /tmp/rb-docker.pid \
    --bridge=none --iptables=false >/tmp/rb-dockerd.log 2>&1 &
  if wait_for 60 docker_answers "$CI_SOCKET"; then
    log "Docker: engine at $CI_SOCKET ($(docker -H "$CI_SOCKET" version --format \
      '{{.Server.Version}}'))"
    return
  fi
  log "Docker: dockerd did not come up; its log:"; tail -n 30 /tmp/rb-dockerd.log
  SKIPS+=("docker|dockerd did not start (see /tmp/rb-dockerd.log)")
}

compose_answers() { docker compose version >/dev/null 2>&1 || docker-compose version >/dev/null 2>&1; }

ensure_compose() {  # for the deployment example's tests
  if compose_answers; then log "Docker Compose: $( (docker compose version 2>/dev/null \
    || docker-compose version) | head -n 1)"; return; fi
  apt_install docker-compose && compose_answers && { ensure_compose; return; }
  SKIPS+=("compose|neither \`docker compose\` nor \`docker-compose\`, and installing Debian's" \
          "docker-compose needs root")
}

# --- Redis ---------------------------------------------------------------------------------

redis_up() (  # a PING on 127.0.0.1:6379 answered +PONG (no redis-cli needed)
  exec 3<>/dev/tcp/127.0.0.1/6379 || exit 1
  printf 'PING\r\n' >&3
  IFS= read -r -t 2 reply <&3 || exit 1
  [ "${reply%$'\r'}" = "+PONG" ]
)

ensure_redis() {
  if redis_up 2>/dev/null; then log "Redis: up on 127.0.0.1:6379"; return; fi
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server \
      || { SKIPS+=("redis|no Redis on 127.0.0.1:6379 and redis-server not installed" \
           "(needs root)"); return; }
  fi
  log "Redis: starting redis-server on 127.0.0.1:6379 (keeps nothing on disk)"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
    --dir /tmp --logfile /tmp/rb-redis.log >/dev/null 2>&1 || true
  if wait_for 10 redis_up; then log "Redis: up on 127.0.0.1:6379"; return; fi
  SKIPS+=("redis|redis-server did not start (see /tmp/rb-redis.log)")
}

# --- the image tests' base -----------------------------------------------------------------

check_image_base() {
  local host="${DOCKER_HOST:-$CI_SOCKET}"
  docker_answers "$host" || return 0  # reported as a Docker skip already
  if docker -H "$host" image inspect debian:trixie-slim >/dev/null 2>&1; then
    log "image tests: base debian:trixie-slim present"
  elif is_root || [ -s /var/cache/rollback-bot/debian-trixie-minbase.tar ]; then
    log "image tests: base debian:trixie-slim absent; made by debootstrap during the tests" \
        "(about a minute, once)"
  else
    SKIPS+=("image|no debian:trixie-slim image, and debootstrap needs root")
  fi
}

# --- what will be skipped ------------------------------------------------------------------

report_skips() {
  local entry marker reason tests
  if [ "${#SKIPS[@]}" = 0 ]; then
    log "nothing will be skipped for want of a service"
    return
  fi
  for entry in "${SKIPS[@]}"; do
    marker="${entry%%|*}"; reason="${entry#*|}"
    if ! tests="$("$PYTEST" --collect-only -q -p no:cacheprovider -m "$marker" 2>&1)"; then
      log "SKIPPED ($reason): every test marked '$marker' (pytest could not list them:" \
          "$(printf '%s\n' "$tests" | tail -n 1))"
      continue
    fi
    tests="$(printf '%s\n' "$tests" | grep '::' || true)"
    log "SKIPPED ($reason): $(printf '%s\n' "$tests" | grep -c '::') tests marked '$marker':"
    printf '%s\n' "$tests" | sed 's/^/    /'
  done
  if [ "${CI:-}" = true ]; then
    log "under CI=true these must run: failing"
    exit 1
  fi
}

main() {
  ensure_postgres
  ensure_docker
  ensure_compose
  ensure_redis
  check_image_base
  report_skips
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main; fi  # sourced: the functions alone
