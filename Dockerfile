# rollback-bot: multi-stage build, non-root, with a pg_dump client at least as new as the target.
ARG PYTHON_VERSION=3.11
ARG PG_MAJOR=17

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY steps ./steps
COPY migrations ./migrations
COPY sandbox ./sandbox
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG PG_MAJOR
# PostgreSQL's own apt repository gives a pg_dump newer than Debian's (pg_dump refuses older servers'
# dumps only in the other direction: the client must be >= the server).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg git \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc \
      -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-${PG_MAJOR} \
 && apt-get purge -y curl gnupg && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
RUN useradd --create-home --uid 10001 rollback
USER rollback
WORKDIR /home/rollback
ENV BACKUP_DIR=/home/rollback/backups OUTBOX_DIR=/home/rollback/outbox
ENTRYPOINT ["rollback-bot", "serve"]
