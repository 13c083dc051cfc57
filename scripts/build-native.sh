#!/usr/bin/env bash
# npm run build:native: the shim the userspace (TUN) data path and the DNS
# server's UDP batches call through koffi. Output: build/native/libweft_shim.so.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/native
cc -O2 -Wall -Wextra -Werror -fPIC -shared -o build/native/libweft_shim.so native/weft_shim.c native/weft_dns.c
# The CNI plugin binary (installed as weft and weft-ipam by `weft install-cni`).
# Static: no dynamic loader at exec, which runtimes do for every pod.
cc -O2 -Wall -Wextra -Werror -static -o build/native/weft-cni native/weft_cni.c
