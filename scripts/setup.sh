#!/usr/bin/env bash
# npm run setup: everything a fresh machine needs, then the build.
#   1. Debian packages the tests and the data path use (needs root and apt).
#   2. npm ci (exact versions from package-lock.json).
#   3. npm run build (WASM core with asc, TypeScript with tsc).
set -euo pipefail
cd "$(dirname "$0")/.."

# iproute2: namespaces, veth, vxlan devices, bridge fdb; iputils-ping: reachability;
# tshark: the VXLAN dissector that judges the core's frames; etcd-server: the
# store the agents (and their tests) use; nftables: --ip-masq; iperf3: the
# data-plane benchmark (bulk), sockperf: its request/response latency, qperf: the same over IPv6 (Debian's sockperf 3.7 has no IPv6); clang, llvm, libbpf-dev, bpftool: compiling the tc
# programs (vmlinux.h from the kernel's BTF); libbpf1: loading them; gcc,
# libc6-dev: the native shim of the userspace (tun) data path and the static CNI
# plugin client; containernetworking-plugins: bridge, ptp and host-local, the
# standard plugins weft-ipam is tested under and benchmarked against; unbound,
# dnsperf, dnsutils: the upstream resolver of the DNS tests, the DNS benchmark's
# load generator and baseline, and dig; strace: tests that watch the order of
# system calls (the control socket is bound under umask 0177); etcd-client
# (etcdctl) and openssl: the etcd TLS and RBAC tests make certificates and
# users; curl: tests that read /metrics from inside a namespace.
# mmdebstrap, buildah, podman, runc: `npm run image` builds the OCI image
# (a Debian rootfs, layers, an archive) and the image tests run the DaemonSet's
# containers from it (podman with runc: crun refuses hybrid cgroups);
# binutils (strip) and git: the image's Node binary and its revision
# annotation; systemd: `systemd-analyze verify` of the systemd unit.
APT_PACKAGES=(iproute2 strace iputils-ping tshark etcd-server etcd-client openssl curl nftables iperf3 sockperf qperf clang llvm libbpf-dev libbpf1 bpftool gcc libc6-dev containernetworking-plugins unbound dnsperf dnsutils
  mmdebstrap buildah podman runc binutils git systemd)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup: missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

npm ci --no-audit --no-fund
npm run build
