#!/usr/bin/env bash
# A stand-in for python:3.11-slim, for machines that cannot pull it: Debian bookworm (whose Python is 3.11) made
# with debootstrap, with pip and venv, and this machine's CA bundle (outbound HTTPS may pass a TLS proxy whose CA
# only the host trusts). Imported into the Docker engine at $DOCKER_HOST as onnxsmith-base:py311-<digest>.
#
#   deploy/base-image.sh            prints the tag (builds or imports the image when the engine lacks it)
#
# Cached by its inputs' digest (this script and the CA bundle): the root filesystem tar is kept in
# $ONNXSMITH_DEPLOY_CACHE (default ~/.cache/onnxsmith-deploy), so a new engine only imports it.
set -euo pipefail
cache=${ONNXSMITH_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/onnxsmith-deploy}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca=/etc/ssl/certs/ca-certificates.crt
digest=$(cat "$0" "$ca" | sha256sum | cut -c1-16)
tag=onnxsmith-base:py311-$digest
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi
mkdir -p "$cache"
tarball=$cache/base-$digest.tar
if [ ! -s "$tarball" ]; then
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$root" "$tarball.part"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$root" "$mirror" >&2
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf python3 "$root/usr/bin/python"
    ln -sf pip3 "$root/usr/bin/pip"
    # the host's bundle, kept by update-ca-certificates too (a later `apt-get install` may run it)
    cp "$ca" "$root/usr/local/share/ca-certificates/host-bundle.crt"
    cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/locale/*
    tar --numeric-owner -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
fi
docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tarball" "$tag" >/dev/null
echo "$tag"
