#!/usr/bin/env bash
# npm run build:bpf: vmlinux.h from the running kernel's BTF, each program
# file compiled with clang -target bpf, then statically linked into one
# object (bpftool gen object; the maps, declared __weak in bpf/lib/maps.h,
# become one set). Outputs in build/bpf/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/bpf
mkdir -p "$out"
for tool in clang bpftool; do
  command -v "$tool" >/dev/null || { echo "build:bpf: $tool is missing; run npm run setup" >&2; exit 1; }
done
[ -r /sys/kernel/btf/vmlinux ] || { echo "build:bpf: /sys/kernel/btf/vmlinux is missing: this kernel has no BTF" >&2; exit 1; }
bpftool btf dump file /sys/kernel/btf/vmlinux format c > "$out/vmlinux.h"
CFLAGS=(-O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_x86 -I "$out" -I bpf)
objs=()
for prog in from_pod from_overlay to_overlay; do
  clang "${CFLAGS[@]}" -c "bpf/$prog.c" -o "$out/$prog.o"
  objs+=("$out/$prog.o")
done
bpftool gen object "$out/weft.bpf.o" "${objs[@]}"
clang "${CFLAGS[@]}" -c bpf/test/weft_test.bpf.c -o "$out/weft_test.bpf.o"
clang "${CFLAGS[@]}" -c bpf/test/rejected.bpf.c -o "$out/rejected.bpf.o"
