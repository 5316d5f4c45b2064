# rollback-bot, built from Debian's own packages only: trixie ships Python 3.13 and
# postgresql-client-17 (a pg_dump at least as new as the target's server, as pg_dump requires).
# Needs BuildKit (for the optional CA secret below). Build:
#
#   docker build -t rollback-bot .
#   docker build --secret id=pip-cert,src=/path/to/ca-bundle.pem -t rollback-bot .
#       (behind a TLS-intercepting proxy: pip, and only pip, trusts that bundle)
#
# No Docker registry? `scripts/debian-base-image.sh` makes debian:trixie-slim with debootstrap;
# or name another Debian trixie image: --build-arg BASE_IMAGE=...
ARG BASE_IMAGE=debian:trixie-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
# An index of one's own (a mirror, a proxy); unset: PyPI. Not for credentials: build
# arguments stay in the image's history.
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a change to the code reuses this layer.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && /opt/venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY README.md ./
COPY bot ./bot
COPY steps ./steps
COPY migrations ./migrations
COPY sandbox ./sandbox
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
 && /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/pip uninstall -y pip

FROM ${BASE_IMAGE} AS runtime
# git: CODE_RESTORE_COMMAND is typically `git checkout <phase-2-commit>`. python3-venv is only
# needed to make the venv (build stage); the venv runs on this same /usr/bin/python3.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 postgresql-client-17 git ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /usr/local/lib/rollback-bot/healthcheck.py
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/rollback \
      --shell /usr/sbin/nologin rollback \
 && install -d -o rollback -g rollback /var/lib/rollback-bot/backups /var/lib/rollback-bot/outbox
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BACKUP_DIR=/var/lib/rollback-bot/backups \
    OUTBOX_DIR=/var/lib/rollback-bot/outbox \
    PG_DUMP_PATH=/usr/lib/postgresql/17/bin/pg_dump \
    PG_RESTORE_PATH=/usr/lib/postgresql/17/bin/pg_restore
# Backups must outlive the container; so must the outbox's emails (MAILER=outbox).
VOLUME ["/var/lib/rollback-bot/backups", "/var/lib/rollback-bot/outbox"]
USER rollback
WORKDIR /home/rollback
EXPOSE 3000
# `serve --http` answers GET /health; Socket Mode has no endpoint, so there the check only says
# so (see docker/healthcheck.py). `rollback-bot check` is no health check: it probes the target,
# Slack and SMTP, whose trouble is not the bot's.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/opt/venv/bin/python", "/usr/local/lib/rollback-bot/healthcheck.py"]
ENTRYPOINT ["rollback-bot"]
CMD ["serve"]
