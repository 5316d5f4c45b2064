#!/bin/sh
# First start on an empty data folder: a cluster whose superuser is POSTGRES_USER (password
# auth over TCP, trust on the local socket, as the official image), with POSTGRES_DB in it.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  if [ "${POSTGRES_DB:-$POSTGRES_USER}" != postgres ]; then
    echo "CREATE DATABASE \"${POSTGRES_DB:-$POSTGRES_USER}\" OWNER \"$POSTGRES_USER\"" \
      | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec "$@"
