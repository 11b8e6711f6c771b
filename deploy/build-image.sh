#!/usr/bin/env bash
# Build the edgerun image FROM scratch (no registry, nothing pulled): the release binary, the
# shared libraries it links (as ldd names them), a static busybox (a shell and the usual
# tools for exec tasks and debugging), and an empty /data. Tags edgerun:<version> and
# edgerun:latest and prints the image size.
#
#   deploy/build-image.sh            # release build (what you ship)
#   PROFILE=dev deploy/build-image.sh  # debug build, quicker to make
#   REDIS=1 deploy/build-image.sh    # also edgerun-redis:latest (Debian's redis-server, FROM scratch)
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
REDIS=${REDIS:-0}

need=()
if [ ! -x /bin/busybox ] || ! ldd /bin/busybox 2>&1 | grep -q "not a dynamic"; then need+=(busybox-static); fi
if [ "$REDIS" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then need+=(redis-server); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "build-image: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
./scripts/setup

cargo build --profile "$PROFILE" -p edgerun-node
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
bin=target/$dir/edgerun
version=$("$bin" --version | awk '{print $2}')

# Copy a program and every shared library it needs into a root, at the same paths.
add_with_libs() {
  local root=$1 prog=$2 dest=$3
  install -D -m 0755 "$prog" "$root$dest"
  ldd "$prog" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
}

make_root() {
  local root=$1
  rm -rf "$root"
  mkdir -p "$root"/{bin,etc,tmp,data,proc,sys,dev,run}
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  install -D -m 0755 /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  # exec tasks and the container executor expect the usual places.
  mkdir -p "$root/usr"
  ln -s ../bin "$root/usr/bin"
  ln -s ../bin "$root/sbin"
}

stage=target/image
make_root "$stage/edgerun"
add_with_libs "$stage/edgerun" "$bin" /usr/local/bin/edgerun
# Line tables are for local debugging; the image keeps symbol names (backtraces still name
# functions) and drops the DWARF: 103 MB -> 26 MB for the release binary.
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$stage/edgerun/usr/local/bin/edgerun"; fi
ln -sf /usr/local/bin/edgerun "$stage/edgerun/bin/edgerun"
cat >"$stage/edgerun.Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY edgerun/ /
ENV EDGERUN_LOG=info
VOLUME /data
EXPOSE 7101 7201
ENTRYPOINT ["/usr/local/bin/edgerun"]
CMD ["node", "--data-dir", "/data"]
DOCKERFILE
docker build -q -f "$stage/edgerun.Dockerfile" -t "edgerun:$version" -t edgerun:latest "$stage" >/dev/null
size=$(docker image inspect edgerun:latest --format '{{.Size}}')
echo "edgerun:$version  edgerun:latest  $((size / 1024 / 1024)) MiB"

if [ "$REDIS" = 1 ]; then
  make_root "$stage/redis"
  add_with_libs "$stage/redis" "$(command -v redis-server)" /usr/local/bin/redis-server
  cat >"$stage/redis.Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY redis/ /
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-server"]
CMD ["--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data"]
DOCKERFILE
  docker build -q -f "$stage/redis.Dockerfile" -t edgerun-redis:latest "$stage" >/dev/null
  size=$(docker image inspect edgerun-redis:latest --format '{{.Size}}')
  echo "edgerun-redis:latest  $((size / 1024 / 1024)) MiB"
fi
