#!/usr/bin/env bash
# Build the rollback-bot image as it is built here and in CI; a normal machine needs only
# `docker build -t rollback-bot .`. What this adds:
#   - the base image made locally (scripts/debian-base-image.sh) when the default one is absent,
#     as no Docker registry answers here;
#   - a Docker CLI that can use BuildKit (the Dockerfile's secret mount needs it): `docker` when
#     it has buildx or predates Docker 23 (built-in BuildKit), else Debian's /usr/bin/docker;
#   - the CA bundle pip is configured with on this machine (PIP_CERT, else `pip config` cert),
#     as the `pip-cert` secret, and its index (PIP_INDEX_URL, else `pip config` index-url) when
#     it is one a build can reach (http or https);
#   - `--network host`, as dockerd runs here with --bridge=none.
#
#   scripts/build-image.sh [TAG]     (TAG default rollback-bot:dev; more `docker build` options
#                                    in RB_BUILD_ARGS)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-rollback-bot:dev}"
BASE_IMAGE="${BASE_IMAGE:-debian:trixie-slim}"
# Every log line masks a URL's password (an index URL with credentials, user:token@host).
masked() { printf '%s' "$*" | sed -E 's#(://[^/:@[:space:]]*):[^/@[:space:]]*@#\1:***@#g'; }
log() { printf '[build-image] %s\n' "$(masked "$*")" >&2; }

buildkit_cli() {
  local candidate version
  for candidate in "$(command -v docker || true)" /usr/bin/docker; do
    [ -x "$candidate" ] || continue
    if "$candidate" buildx version >/dev/null 2>&1; then echo "$candidate"; return; fi
    version="$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null || true)"
    if [ -n "$version" ] && [ "${version%%.*}" -lt 23 ] 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  return 1
}

pip_setting() {  # $1: environment variable, $2: pip config key
  local value="${!1:-}"
  if [ -z "$value" ] && command -v python3 >/dev/null 2>&1; then
    value="$(python3 -m pip config get "$2" 2>/dev/null || true)"
  fi
  printf '%s' "$value"
}

if [ "$BASE_IMAGE" = debian:trixie-slim ] && ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1
then
  scripts/debian-base-image.sh "$BASE_IMAGE"
fi

cli="$(buildkit_cli)" || {
  log "no Docker CLI here can build with BuildKit (install buildx, or Debian's docker.io)"
  exit 1
}
options=(--network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$TAG")
cert="$(pip_setting PIP_CERT global.cert)"
if [ -n "$cert" ] && [ -s "$cert" ]; then
  log "pip trusts $cert (secret pip-cert)"
  options+=(--secret "id=pip-cert,src=$cert")
fi
index="$(pip_setting PIP_INDEX_URL global.index-url)"
case "$index" in
  http://*|https://*) log "pip index $index"; options+=(--build-arg "PIP_INDEX_URL=$index");;
esac
# shellcheck disable=SC2206  # RB_BUILD_ARGS is split on purpose
options+=(${RB_BUILD_ARGS:-})

log "$cli build ${options[*]} ."
DOCKER_BUILDKIT=1 "$cli" build "${options[@]}" .
log "$TAG: $(docker image inspect --format '{{.Size}}' "$TAG") bytes"
