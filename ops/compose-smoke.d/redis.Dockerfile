# Stand-in for redis:7-bookworm (compose.yaml's redis service), built by ops/compose-smoke.
FROM debian:bookworm-slim

# As the official image: the redis user and group (999) are made first, so the ids are fixed.
RUN groupadd -r -g 999 redis && useradd -r -g redis -u 999 redis

# Differs: Debian's redis-server 7.0 (and redis-cli) from the archive; the official image
# builds the latest Redis 7 from source into /usr/local/bin. gosu and tzdata as there.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gosu tzdata redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/*

RUN mkdir /data && chown redis:redis /data
VOLUME /data
WORKDIR /data

# Differs: redis-entrypoint.sh is our own script doing what the official entrypoint does for
# compose.yaml's command (drop root with gosu, umask 0077), not the official script.
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]

EXPOSE 6379
CMD ["redis-server"]
