#!/usr/bin/env bash
# docker-entrypoint.sh of the postgres:15-bookworm stand-in (ops/compose-smoke.d/
# postgres.Dockerfile): what compose.yaml's postgres service needs of the official entrypoint,
# written for the smoke test.
#   - `docker-entrypoint.sh -c x=y` means `postgres -c x=y`;
#   - run as root, it makes $PGDATA the postgres user's and starts again as that user;
#   - on an empty $PGDATA: initdb with the superuser password POSTGRES_PASSWORD (required),
#     `host all all all scram-sha-256` appended to pg_hba.conf (initdb's own lines trust the
#     local socket and loopback, as in the official image), then POSTGRES_DB created by a
#     server that listens on its socket only.
# Not done (compose.yaml uses none of it): POSTGRES_USER, POSTGRES_INITDB_ARGS,
# POSTGRES_HOST_AUTH_METHOD, *_FILE secrets, /docker-entrypoint-initdb.d scripts, nss_wrapper.
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec gosu postgres "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "docker-entrypoint.sh: set POSTGRES_PASSWORD (the database is not initialised)" >&2
        exit 1
    fi
    initdb --username=postgres --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD")
    printf '\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start
    db=${POSTGRES_DB:-postgres}
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --no-psqlrc --username postgres --dbname postgres \
            --set db="$db" <<<'CREATE DATABASE :"db";'
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "docker-entrypoint.sh: PostgreSQL initialised; starting it"
fi

exec "$@"
