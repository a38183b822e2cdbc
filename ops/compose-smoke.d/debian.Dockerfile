# Stand-in for debian:bookworm-slim, which Docker Hub serves and this machine cannot reach.
# ops/compose-smoke builds it from a `debootstrap --variant=minbase bookworm` root filesystem
# imported as wikihash-smoke/rootfs:bookworm (the official image is also a minbase debootstrap,
# made by debuerreotype, with documentation and caches trimmed).
FROM wikihash-smoke/rootfs:bookworm

# Differs: this machine's CA certificates (/usr/local/share/ca-certificates, the bundle) and its
# apt sources and pip settings, copied into the build context by ops/compose-smoke when it runs
# and deleted afterwards (never committed): builds inside containers reach Debian's archive and
# PyPI only through them. The official image has Debian's sources and no pip settings.
COPY site/ /

# As the official image: no downloaded packages or package lists left in the image.
RUN apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

CMD ["bash"]
