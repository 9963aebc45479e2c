#!/usr/bin/env bash
# Prepare a Debian (bookworm) machine with no Docker engine and no container registry to
# build and run aimesh's images with podman. Idempotent: a second run checks and returns
# in about a second.
#
# What it does, and why:
#   1. apt-get install podman, buildah, runc (+ uidmap, slirp4netns, fuse-overlayfs,
#      containernetworking-plugins, debootstrap): Debian's own packages, ~11 s.
#   2. Writes /etc/containers/containers.conf: runtime runc (crun rejects this sandbox's
#      hybrid cgroups), cgroup manager cgroupfs (no systemd), and explicit nofile/nproc
#      limits (the sandbox refuses podman's default RLIMIT_NOFILE with EPERM).
#   3. Makes stand-in base images, since nothing can be pulled here:
#        localhost/aimesh-base/debian:bookworm  debootstrap --variant=minbase bookworm
#        localhost/aimesh-base/python:3.11      + this machine's CPython >= 3.11.5 in
#                                                 /usr/local (Debian's 3.11.2 is too old
#                                                 for the pinned soupsieve), as in the
#                                                 official python:*-slim image, its
#                                                 shared objects stripped as the
#                                                 official build strips them
#        localhost/aimesh-base/node:20          + this machine's Node.js 20 and npm
#        localhost/aimesh-base/nginx:bookworm   + Debian's nginx-light
#      The Dockerfiles take these as build arguments (PYTHON_IMAGE, NODE_IMAGE,
#      NGINX_IMAGE); scripts/images/build.py passes them when they exist.
#   4. Writes a pip.conf for builds (this machine's CA bundle, its local wheel directory
#      with the CPU torch wheel, its local package indexes); build.py mounts it and those
#      directories into each RUN step. Nothing of it ends up in an image.
#
# Environment: AIMESH_IMAGES_CACHE (default /var/cache/aimesh-images) keeps the root
# filesystems; DEBIAN_MIRROR (default: the mirror apt already uses); HOST_PYTHON (default
# python3.11 on PATH).
set -euo pipefail

CACHE=${AIMESH_IMAGES_CACHE:-/var/cache/aimesh-images}
HOST_PYTHON=${HOST_PYTHON:-$(command -v python3.11 || true)}
say() { printf '[prepare_podman] %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  say "needs root (apt-get, debootstrap, /etc/containers)"; exit 1
fi
mkdir -p "$CACHE"

# 1. Packages -----------------------------------------------------------------------------
# catatonit: the init of the pods' infra container (tests/images runs the mesh in one pod).
# binutils: `strip` for the stand-in CPython.
PKGS=(podman buildah runc uidmap slirp4netns fuse-overlayfs containernetworking-plugins debootstrap catatonit binutils)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. podman configuration ----------------------------------------------------------------
CONF=/etc/containers/containers.conf
WANT='# Written by aimesh scripts/images/prepare_podman.sh (see that file for why).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$(printf '%s' "$WANT")" ]; then
  say "writing $CONF"
  mkdir -p /etc/containers
  printf '%s' "$WANT" >"$CONF"
fi

# 3. Stand-in base images ------------------------------------------------------------------
mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(grep -rhoE '^(URIs:|deb) +http[^ ]*debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
      | grep -v security | head -1 | awk '{print $2}')
  echo "${m:-http://deb.debian.org/debian}"
}

# A stand-in made by an older version of this script (a different recipe) is made again:
# each carries the recipe's revision as a label.
BASE_REVISION=2
have_image() {
  [ "$(podman image inspect -f '{{index .Labels "org.aimesh.base-revision"}}' "$1" 2>/dev/null)" = "$BASE_REVISION" ]
}
LABEL="LABEL org.aimesh.base-revision=$BASE_REVISION"

# The official slim images carry these (ca-certificates, netbase, tzdata) plus the shared
# libraries CPython's extension modules link to.
DEB_INCLUDE=ca-certificates,netbase,tzdata,libsqlite3-0,libffi8,libssl3,libreadline8,libncursesw6,libuuid1,libbz2-1.0,liblzma5,zlib1g,libexpat1,libgdbm6
ROOT_DEBIAN=$CACHE/rootfs-debian
if ! have_image localhost/aimesh-base/debian:bookworm; then
  if [ ! -f "$ROOT_DEBIAN/.done" ]; then
    say "debootstrap --variant=minbase bookworm from $(mirror) (about 30-60 s)"
    rm -rf "$ROOT_DEBIAN"
    debootstrap --variant=minbase --include="$DEB_INCLUDE" bookworm "$ROOT_DEBIAN" "$(mirror)" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
    # No apt lists or caches in the image.
    rm -rf "$ROOT_DEBIAN"/var/lib/apt/lists/* "$ROOT_DEBIAN"/var/cache/apt/*.bin "$ROOT_DEBIAN"/var/cache/apt/archives/*.deb
    touch "$ROOT_DEBIAN/.done"
  fi
  # As Debian's own -slim images do: no manuals, documentation (but the copyright files),
  # or translations (about 50 MB).
  find "$ROOT_DEBIAN/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$ROOT_DEBIAN"/usr/share/man/* "$ROOT_DEBIAN"/usr/share/info/* "$ROOT_DEBIAN"/usr/share/locale/* \
         "$ROOT_DEBIAN"/var/cache/debconf/*-old "$ROOT_DEBIAN"/var/log/*.log
  say "importing localhost/aimesh-base/debian:bookworm"
  tar -C "$ROOT_DEBIAN" --exclude=./.done -c . | podman import --quiet --change "$LABEL" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - localhost/aimesh-base/debian:bookworm >/dev/null
fi

if ! have_image localhost/aimesh-base/python:3.11; then
  [ -n "$HOST_PYTHON" ] || { say "no python3.11 on PATH: set HOST_PYTHON"; exit 1; }
  read -r PYVER PREFIX < <("$HOST_PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3], sys.base_prefix)')
  "$HOST_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11, 5))' \
    || { say "host CPython $PYVER is older than 3.11.5 (the pinned soupsieve needs newer)"; exit 1; }
  ROOT=$CACHE/rootfs-python
  say "making localhost/aimesh-base/python:3.11 from $PREFIX (CPython $PYVER)"
  rm -rf "$ROOT"; cp -a "$ROOT_DEBIAN" "$ROOT"; rm -f "$ROOT/.done"
  # The interpreter and its standard library only: not the host's site-packages, tests,
  # IDLE or tkinter (as the slim image leaves out what it can).
  mkdir -p "$ROOT/usr/local/bin" "$ROOT/usr/local/lib"
  cp -a "$PREFIX/bin/python3.11" "$ROOT/usr/local/bin/"
  cp -a "$PREFIX"/lib/libpython3.11.so* "$ROOT/usr/local/lib/" 2>/dev/null || true
  [ -d "$PREFIX/include" ] && cp -a "$PREFIX/include" "$ROOT/usr/local/"
  tar -C "$PREFIX/lib" --exclude='python3.11/site-packages/*' --exclude='python3.11/test' \
      --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' --exclude='python3.11/turtledemo' \
      --exclude='*/tests' --exclude='__pycache__' --exclude='python3.11/config-3.11-*/*.a' \
      -c python3.11 | tar -C "$ROOT/usr/local/lib" -x
  ln -sf python3.11 "$ROOT/usr/local/bin/python3"; ln -sf python3.11 "$ROOT/usr/local/bin/python"
  # The official images link CPython with --strip-all; a pyenv build keeps its debug
  # symbols (libpython 23 MB instead of about 4 MB, lib-dynload 15 MB instead of 4).
  find "$ROOT/usr/local/bin/python3.11" "$ROOT/usr/local/lib" -type f \( -name 'python3.11' -o -name '*.so*' \) \
    -exec strip --strip-unneeded {} +
  chroot "$ROOT" /sbin/ldconfig
  # pip, as the official image has; --default-pip adds the pip/pip3 commands.
  chroot "$ROOT" /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null
  chroot "$ROOT" /usr/local/bin/python3 -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, decimal, hashlib, venv' \
    || { say "the copied CPython misses a shared library"; exit 1; }
  find "$ROOT/usr/local" -name __pycache__ -prune -exec rm -rf {} +
  tar -C "$ROOT" -c . | podman import --quiet --change "$LABEL" \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change "ENV PYTHON_VERSION=$PYVER" --change 'CMD ["python3"]' \
    - localhost/aimesh-base/python:3.11 >/dev/null
  rm -rf "$ROOT"
fi

if ! have_image localhost/aimesh-base/node:20; then
  NODE=$(command -v node || true)
  [ -n "$NODE" ] && "$NODE" -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
    || { say "no Node.js >= 20 on PATH: the web image's builder needs one"; exit 1; }
  ROOT=$CACHE/rootfs-node
  say "making localhost/aimesh-base/node:20 from $NODE ($("$NODE" --version))"
  rm -rf "$ROOT"; cp -a "$ROOT_DEBIAN" "$ROOT"; rm -f "$ROOT/.done"
  mkdir -p "$ROOT/usr/local/bin" "$ROOT/usr/local/lib/node_modules"
  cp -aL "$NODE" "$ROOT/usr/local/bin/node"
  NPM_DIR=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  cp -a "$NPM_DIR" "$ROOT/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$ROOT/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$ROOT/usr/local/bin/npx"
  # This builder-only base trusts the machine's CA bundle (the npm registry is reached
  # through its egress proxy); the web image's final stage is nginx, without any of it.
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
  chroot "$ROOT" /usr/local/bin/node --version >/dev/null || { say "the copied node does not run"; exit 1; }
  tar -C "$ROOT" -c . | podman import --quiet --change "$LABEL" \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["node"]' - localhost/aimesh-base/node:20 >/dev/null
  rm -rf "$ROOT"
fi

if ! have_image localhost/aimesh-base/nginx:bookworm; then
  ROOT=$CACHE/rootfs-nginx
  say "making localhost/aimesh-base/nginx:bookworm (Debian's nginx-light)"
  rm -rf "$ROOT"; cp -a "$ROOT_DEBIAN" "$ROOT"; rm -f "$ROOT/.done"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  mount -t proc proc "$ROOT/proc"
  trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT
  chroot "$ROOT" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/log/nginx /etc/nginx/sites-enabled/*'
  umount "$ROOT/proc"; trap - EXIT
  : >"$ROOT/etc/resolv.conf"
  # As the nginx-unprivileged image: html owned by root, logs to stdout/stderr, no root.
  ln -sf /dev/stdout "$ROOT/var/log/nginx-access.log" 2>/dev/null || true
  tar -C "$ROOT" -c . | podman import --quiet --change "$LABEL" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'STOPSIGNAL SIGQUIT' --change 'CMD ["nginx", "-g", "daemon off;"]' \
    - localhost/aimesh-base/nginx:bookworm >/dev/null
  rm -rf "$ROOT"
fi

# 4. pip configuration for builds --------------------------------------------------------
PIPCONF=$CACHE/pip.conf
{
  echo "# Mounted at /etc/pip.conf into RUN steps by scripts/images/build.py; in no image."
  echo "[global]"
  echo "cert = /etc/ssl/certs/ca-certificates.crt"
  echo "default-timeout = 60"
  echo "retries = 2"
  fl=$(pip3 config get global.find-links 2>/dev/null || true)
  [ -n "$fl" ] && echo "find-links = $fl"
  ei=$(pip3 config get global.extra-index-url 2>/dev/null || true)
  [ -n "$ei" ] && echo "extra-index-url = $ei"
} >"$PIPCONF.new"
mv "$PIPCONF.new" "$PIPCONF"

say "ready: $(podman --version); bases: $(podman images --format '{{.Repository}}:{{.Tag}}' | grep aimesh-base | sort | tr '\n' ' ')"
