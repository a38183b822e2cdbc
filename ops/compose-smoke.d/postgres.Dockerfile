# Stand-in for postgres:15-bookworm (ops/Dockerfile.postgres's base), built by ops/compose-smoke.
FROM debian:bookworm-slim

# As the official image: the postgres user and group (999), made before the packages.
RUN groupadd -r postgres --gid=999 \
 && useradd -r -g postgres --uid=999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres \
 && mkdir -p /var/lib/postgresql && chown -R postgres:postgres /var/lib/postgresql

# As the official image: gosu, and the en_US.UTF-8 locale as the default.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gosu locales \
 && localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8 \
 && rm -rf /var/lib/apt/lists/*
ENV LANG=en_US.utf8

RUN mkdir /docker-entrypoint-initdb.d

ENV PG_MAJOR=15
ENV PATH=$PATH:/usr/lib/postgresql/$PG_MAJOR/bin

# Differs: Debian's postgresql-15 from bookworm's archive; the official image takes the latest
# 15.x from apt.postgresql.org. As there, postgresql-common is told not to create a cluster.
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-common \
 && sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
 && apt-get install -y --no-install-recommends "postgresql-$PG_MAJOR" \
 && rm -rf /var/lib/apt/lists/*

# As the official image: listen on every address by default (compose's override narrows it).
RUN sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" \
    "/usr/share/postgresql/$PG_MAJOR/postgresql.conf.sample"

RUN mkdir -p /var/run/postgresql && chown -R postgres:postgres /var/run/postgresql \
 && chmod 3777 /var/run/postgresql

ENV PGDATA=/var/lib/postgresql/data
RUN mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" && chmod 1777 "$PGDATA"
VOLUME /var/lib/postgresql/data

# Differs: postgres-entrypoint.sh is our own script doing the part of the official entrypoint
# that compose.yaml uses (first start: initdb with POSTGRES_PASSWORD, password authentication
# beyond the local socket and loopback, the POSTGRES_DB database), not the official script.
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]

STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
