#!/usr/bin/env bash
# Make the Dockerfile's base image locally, for machines that reach Debian's packages but no
# Docker registry (CI here): debootstrap a minimal Debian into a folder and `docker import` it
# under the Dockerfile's default base name. Nothing is done when that tag already exists; the
# root filesystem's tarball is kept in a cache folder, so a fresh engine imports it again without
# a second debootstrap.
#
#   scripts/debian-base-image.sh [TAG]        (TAG default debian:trixie-slim; needs root the
#                                             first time, for debootstrap)
set -euo pipefail

TAG="${1:-debian:trixie-slim}"
SUITE="${DEBIAN_SUITE:-trixie}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_DIR="${RB_CACHE_DIR:-/var/cache/rollback-bot}"
TARBALL="$CACHE_DIR/debian-$SUITE-minbase.tar"

log() { printf '[base-image] %s\n' "$*" >&2; }

# Slim as debian:*-slim is: no documentation, manuals or translations, now or from later installs
# (copyright files stay), no package lists or caches (apt-get update brings them back).
slim() {
  local root="$1"
  case "$root" in /|"") log "refusing to slim '$root'"; exit 1;; esac
  printf '%s\n' \
    'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/lintian/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    >"$root/etc/dpkg/dpkg.cfg.d/docker-slim"
  find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/groff" \
    "$root/usr/share/lintian" "$root/var/lib/apt/lists" "$root/var/cache/apt"
  mkdir -p "$root/var/lib/apt/lists/partial" "$root/var/cache/apt/archives/partial"
}

if docker image inspect "$TAG" >/dev/null 2>&1; then
  log "$TAG is already in the engine: nothing to do"
  exit 0
fi

if [ ! -s "$TARBALL" ]; then
  if [ "$(id -u)" != 0 ]; then
    log "debootstrap needs root, and $TARBALL is not cached: cannot make $TAG"
    exit 1
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing Debian's debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  mkdir -p "$CACHE_DIR"
  root="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  trap 'rm -rf "$root" "$TARBALL.part"' EXIT
  log "debootstrap --variant=minbase $SUITE from $MIRROR (a minute or two)"
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; exit 1; }
  slim "$root"
  tar --numeric-owner -C "$root" -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
fi

log "importing $TARBALL as $TAG"
docker import --change 'CMD ["bash"]' "$TARBALL" "$TAG" >/dev/null
log "$TAG: $(docker image inspect --format '{{.Size}}' "$TAG") bytes"
