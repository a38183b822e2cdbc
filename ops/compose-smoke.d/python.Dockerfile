# Stand-in for python:3.11-slim-bookworm (ops/Dockerfile's base), built by ops/compose-smoke.
FROM debian:bookworm-slim

ENV LANG=C.UTF-8

# Differs: Debian's python3 (3.11.2) and pip from the archive; the official image builds the
# latest CPython 3.11 from source into /usr/local and installs pip with ensurepip. The runtime
# packages are the official image's (ca-certificates, netbase, tzdata).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates netbase tzdata \
    python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/*

# Differs: Debian marks its Python externally managed (PEP 668); the official image's pip
# installs system-wide, as ops/Dockerfile expects. `python` and `pip` on PATH, as there.
RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && ln -s /usr/bin/pip3 /usr/local/bin/pip

CMD ["python3"]
