#!/usr/bin/env bash
# npm run image: builds the weft OCI image from this checkout's build and loads
# it into the local container storage (podman and buildah share it), then
# writes an OCI archive for pushing to any registry.
#
#   npm run image                  # npm run build, then this
#   npm run image -- --if-changed  # only when the inputs changed since the last build
#   WEFT_IMAGE_REBUILD_BASE=1 npm run image   # also rebuild the cached Debian rootfs (security updates)
#
# Three layers, so that a code change re-pushes only the top one:
#   1. a minimal Debian bookworm rootfs (mmdebstrap, variant essential) with the
#      packages the agent runs at run time and no compilers, headers or docs;
#      cached under build/image/ by its package list and options;
#   2. the Node runtime weft is built with: this build's own `node` binary,
#      stripped of debug symbols, at /usr/local/bin/node;
#   3. weft at /opt/weft: package.json, bin/, dist/src and dist/asm (no source
#      maps, no benchmarks), production dependencies (npm ci --omit=dev), the
#      WASM core, the native shim, poll addon and CNI plugin binary, and the BPF
#      object; /usr/local/bin/weft is the entrypoint.
# Outputs: the image localhost/weft:<version> (label dev.weft.image.content = a
# hash of every input, which --if-changed compares), build/image/weft-<version>.oci.tar,
# and build/image/report.txt with the sizes of the image, its layers and its largest parts.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if_changed=0
for a in "$@"; do
  case "$a" in
    --if-changed) if_changed=1 ;;
    *) echo "image: unknown argument $a (takes --if-changed)" >&2; exit 2 ;;
  esac
done

die() { echo "image: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap and buildah write the image's files as root)"
for tool in mmdebstrap buildah podman strip git sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing; run npm run setup (it installs mmdebstrap, buildah, podman and runc)"
done

# One build at a time on this machine (the local storage and its tags are shared).
mkdir -p /run/lock
exec {lock}>/run/lock/weft-image.lock
flock "$lock"

version=$(node -p 'require("./package.json").version')
image="localhost/weft:$version"
out=build/image
archive="$out/weft-$version.oci.tar"
mkdir -p "$out"

# What the agent runs at run time, beside Node and its own files:
#   iproute2 (ip, bridge, tc), nftables (nft, --ip-masq), libbpf1 (the ebpf
#   backend loads libbpf.so.1 through koffi), mount and util-linux (mount,
#   umount, findmnt, nsenter into pod namespaces), libstdc++6 (node).
BASE_PACKAGES=(iproute2 nftables libbpf1 mount util-linux libstdc++6)
SUITE=bookworm
MIRRORS=(
  "deb http://deb.debian.org/debian $SUITE main"
  "deb http://deb.debian.org/debian $SUITE-updates main"
  "deb http://deb.debian.org/debian-security $SUITE-security main"
)
# Nothing the agent reads: documentation, manual pages, translations, headers (iproute2 ships one).
DPKG_OPTS=(
  "path-exclude=/usr/include/*"
  "path-exclude=/usr/share/doc/*" "path-include=/usr/share/doc/*/copyright"
  "path-exclude=/usr/share/man/*" "path-exclude=/usr/share/info/*"
  "path-exclude=/usr/share/locale/*" "path-include=/usr/share/locale/locale.alias"
  "path-exclude=/usr/share/lintian/*" "path-exclude=/usr/share/linda/*"
  "path-exclude=/usr/share/bash-completion/*" "path-exclude=/usr/share/zsh/*"
)

node_bin=$(readlink -f "$(command -v node)")
node_version=$(node --version)

# The build this image packs must exist.
need=(bin/weft.js dist/src/cli/main.js dist/asm/abi.js build/weft-core.wasm build/native/libweft_shim.so build/native/weft_poll.node
  build/native/weft-cni build/bpf/weft.bpf.o package.json package-lock.json)
for f in "${need[@]}"; do
  [ -e "$f" ] || die "$f is missing: run npm run build first (npm run setup on a new machine)"
done

# The base layer's key: what goes into the rootfs.
base_key=$(printf '%s\n' "$SUITE" "${BASE_PACKAGES[@]}" "${MIRRORS[@]}" "${DPKG_OPTS[@]}" "variant=essential merged-usr-hook no-recommends v2" | sha256sum | cut -c1-16)
base_tar="$out/base-$base_key.tar"

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=$(scripts/source-url.sh "${WEFT_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || echo "$root")}")
dirty=false
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || dirty=true

# The image's content key: the base key, the revision and source (annotations), the node binary, these scripts,
# and every file of the build it packs.
content_key=$({
  echo "$base_key $revision $dirty $source_url"
  sha256sum "$node_bin" scripts/image.sh scripts/source-url.sh package.json package-lock.json bin/weft.js build/weft-core.wasm \
    build/native/libweft_shim.so build/native/weft_poll.node build/native/weft-cni build/bpf/weft.bpf.o
  find dist/src dist/asm -type f -name '*.js' -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-32)

current=$(podman image inspect --format '{{index .Labels "dev.weft.image.content"}}' "$image" 2>/dev/null || true)
previous_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
if [ "$if_changed" = 1 ] && [ "$current" = "$content_key" ] && [ -f "$archive" ] && [ "$(cat "$archive.content" 2>/dev/null)" = "$content_key" ]; then
  echo "image: $image is up to date (content $content_key)"
  exit 0
fi

t0=$SECONDS
work=$(mktemp -d /tmp/weft-image.XXXXXX)
ctrs=()
cleanup() {
  for c in "${ctrs[@]}"; do [ -z "$c" ] || buildah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Reproducible timestamps: the commit's time.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

# 1. The Debian rootfs (cached: its inputs are in its name).
if [ ! -f "$base_tar" ] || [ "${WEFT_IMAGE_REBUILD_BASE:-0}" = 1 ]; then
  echo "image: building the Debian $SUITE rootfs (mmdebstrap: ${BASE_PACKAGES[*]})"
  rm -f "$out"/base-*.tar
  # merged /usr by mmdebstrap's hook (not the usrmerge package, which pulls in perl); no Recommends.
  mm=(mmdebstrap --quiet --variant=essential --mode=root --format=tar --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")"
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --aptopt='Apt::Install-Recommends "false"')
  for o in "${DPKG_OPTS[@]}"; do mm+=(--dpkgopt="$o"); done
  if ! SOURCE_DATE_EPOCH=$epoch "${mm[@]}" "$SUITE" "$work/base.tar" "${MIRRORS[@]}" >"$work/mmdebstrap.log" 2>&1; then
    tail -40 "$work/mmdebstrap.log" >&2
    die "mmdebstrap failed (its log above); it needs Debian's mirrors (deb.debian.org) reachable"
  fi
  mv "$work/base.tar" "$base_tar"
fi
t_base=$SECONDS

# 2. Node: this build's own binary, stripped (its dynamic symbols, which addons bind to, stay).
mkdir -p "$work/node/usr/local/bin"
strip -o "$work/node/usr/local/bin/node" "$node_bin"

# 3. weft.
app="$work/app/opt/weft"
mkdir -p "$app/build/native" "$app/build/bpf" "$app/dist" "$work/app/usr/local/bin"
cp package.json package-lock.json "$app/"
cp -r bin "$app/bin"
cp -r dist/src dist/asm "$app/dist/"
find "$app/dist" -name '*.map' -delete
cp build/weft-core.wasm "$app/build/"
cp build/native/libweft_shim.so build/native/weft_poll.node build/native/weft-cni "$app/build/native/"
cp build/bpf/weft.bpf.o "$app/build/bpf/"
echo "image: production dependencies (npm ci --omit=dev)"
(cd "$app" && npm ci --omit=dev --no-audit --no-fund --prefer-offline --loglevel=error >/dev/null)
# koffi ships its native module for every libc and architecture: keep glibc x86-64. Nothing loads
# type declarations, TypeScript sources, source maps or markdown at run time.
find "$app/node_modules/@koromix" -mindepth 2 -maxdepth 2 -type d ! -name linux_x64 -exec rm -rf {} + 2>/dev/null || true
rm -rf "$app/node_modules/@types"
find "$app/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.cts' -o -name '*.d.mts' -o -name '*.ts' -o -name '*.map' -o -name '*.md' \) -delete
ln -s /opt/weft/bin/weft.js "$work/app/usr/local/bin/weft"
t_stage=$SECONDS

# The image, layer by layer; intermediate images are removed at the end.
step() { # step <from> <dir-to-add> <tag> <created-by>: one layer
  local c
  c=$(buildah from --pull-never "$1")
  ctrs+=("$c")
  buildah add --quiet "$c" "$2" / >/dev/null
  buildah config --created-by "$4" "$c"
  if [ "$3" = "$image" ]; then
    # No base-image annotations: the base is this script's own rootfs layer, not a published image.
    buildah config \
      --annotation org.opencontainers.image.base.digest- --annotation org.opencontainers.image.base.name- \
      --entrypoint '["weft"]' --cmd '["--help"]' --workingdir / \
      --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env NODE_ENV=production \
      --stop-signal SIGTERM \
      --label "dev.weft.image.content=$content_key" --label "dev.weft.image.node=$node_version" --label "dev.weft.image.dirty=$dirty" \
      --label "org.opencontainers.image.version=$version" --label "org.opencontainers.image.revision=$revision" \
      --label "org.opencontainers.image.source=$source_url" \
      --annotation "org.opencontainers.image.version=$version" --annotation "org.opencontainers.image.revision=$revision" \
      --annotation "org.opencontainers.image.source=$source_url" --annotation "org.opencontainers.image.created=$created" \
      --annotation "org.opencontainers.image.title=weft" \
      --annotation "org.opencontainers.image.description=weft container-network node agent (flannel-compatible VXLAN, IPAM, node-local DNS)" \
      --annotation "org.opencontainers.image.licenses=Apache-2.0" \
      --annotation "dev.weft.image.base=debian $SUITE, mmdebstrap variant essential + ${BASE_PACKAGES[*]}" \
      "$c"
  fi
  buildah commit --quiet --rm --timestamp "$epoch" "$c" "$3" >/dev/null
  ctrs=("${ctrs[@]/$c}")
}
tmp_base="localhost/weft-build-base:$content_key"
tmp_node="localhost/weft-build-node:$content_key"
c0=$(buildah from scratch)
ctrs+=("$c0")
buildah add --quiet "$c0" "$base_tar" / >/dev/null
buildah config --created-by "debian $SUITE rootfs: mmdebstrap --variant=essential --include=$(IFS=,; echo "${BASE_PACKAGES[*]}")" "$c0"
buildah commit --quiet --rm --timestamp "$epoch" "$c0" "$tmp_base" >/dev/null
ctrs=("${ctrs[@]/$c0}")
step "$tmp_base" "$work/node" "$tmp_node" "node $node_version: this build's own binary, stripped (/usr/local/bin/node)"
step "$tmp_node" "$work/app" "$image" "weft $version ($revision): /opt/weft, entrypoint /usr/local/bin/weft"
buildah rmi "$tmp_node" "$tmp_base" >/dev/null
# The image this one replaces (now untagged) goes, unless a container still uses it.
if [ -n "$previous_id" ] && [ "$previous_id" != "$(podman image inspect --format '{{.Id}}' "$image")" ]; then
  podman rmi "$previous_id" >/dev/null 2>&1 || echo "image: the previous image ${previous_id:0:12} is still in use; left in place"
fi
t_image=$SECONDS

rm -f "$archive" "$archive.content"
podman save --quiet --format oci-archive -o "$archive" "$image"
echo "$content_key" > "$archive.content"
t_archive=$SECONDS

# The report: image size, layers, largest parts.
{
  echo "image $image ($(podman image inspect --format '{{.Id}}' "$image" | cut -c1-12)), weft $version, revision $revision, node $node_version"
  echo "size (uncompressed): $(podman image inspect --format '{{.Size}}' "$image") bytes"
  echo "oci archive: $archive, $(stat -c %s "$archive") bytes"
  echo "layers (podman history):"
  podman history --format '  {{.Size}}	{{.CreatedBy}}' "$image" | cut -c1-150
  echo "largest parts (du -sk, KiB):"
  mkdir -p "$work/rootfs"
  tar -xf "$base_tar" -C "$work/rootfs" 2>/dev/null || true
  cp -a "$work/node/." "$work/app/." "$work/rootfs/"
  (cd "$work/rootfs" && { du -sk usr/local/bin/node opt/weft/node_modules opt/weft/dist opt/weft/build usr/lib/x86_64-linux-gnu usr/bin usr/sbin usr/share var etc 2>/dev/null || true; } | sort -rn | sed 's/^/  /')
  echo "largest packages of the base (dpkg Installed-Size, KiB):"
  dpkg-query --admindir="$work/rootfs/var/lib/dpkg" -W -f '${Installed-Size}\t${Package}\n' | sort -rn | head -12 | sed 's/^/  /'
  echo "largest production dependencies (du -sk, KiB):"
  (cd "$work/rootfs/opt/weft/node_modules" && { du -sk -- * @*/* 2>/dev/null || true; } | sort -rn | head -8 | sed "s/^/  /")
  echo "build times (s): base $((t_base - t0)), stage $((t_stage - t_base)), layers $((t_image - t_stage)), archive $((t_archive - t_image))"
} > "$out/report.txt"
cat "$out/report.txt"
echo "image: built $image and $archive in $((SECONDS - t0)) s"
