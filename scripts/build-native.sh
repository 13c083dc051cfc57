#!/usr/bin/env bash
# npm run build:native: the shim the userspace (TUN) data path and the DNS
# server's UDP batches call through koffi. Output: build/native/libweft_shim.so.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/native
cc -O2 -Wall -Wextra -Werror -fPIC -shared -o build/native/libweft_shim.so native/weft_shim.c native/weft_units.c native/weft_dns.c
# The CNI plugin binary (installed as weft and weft-ipam by `weft install-cni`).
# Static: no dynamic loader at exec, which runtimes do for every pod.
cc -O2 -Wall -Wextra -Werror -static -o build/native/weft-cni native/weft_cni.c
# The poll addon (N-API): socket readiness on Node's event loop for the DNS
# server's batch path. Built against the headers of the Node that runs it.
NODE_INC="$(dirname "$(dirname "$(command -v node)")")/include/node"
[ -f "$NODE_INC/node_api.h" ] || NODE_INC=/usr/include/node
cc -O2 -Wall -Wextra -Werror -fPIC -shared -I"$NODE_INC" -o build/native/weft_poll.node native/weft_poll.c
