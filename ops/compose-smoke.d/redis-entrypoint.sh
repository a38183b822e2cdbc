#!/bin/sh
# docker-entrypoint.sh of the redis:7-bookworm stand-in (ops/compose-smoke.d/redis.Dockerfile):
# the behaviour of the official entrypoint that compose.yaml relies on, written for the smoke
# test. `docker-entrypoint.sh -opts` and `docker-entrypoint.sh x.conf` mean redis-server; run
# as root, redis-server gets /data chowned and is started again as the redis user.
set -e

case "$1" in
    -*|*.conf) set -- redis-server "$@" ;;
esac

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec gosu redis "$0" "$@"
fi

umask 0077
exec "$@"
