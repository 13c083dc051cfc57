/* A program the verifier must refuse: it reads the packet without a bounds
 * check. Loading it shows how a rejection surfaces (BpfError + the log). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("tc")
int unchecked_read(struct __sk_buff *ctx)
{
	unsigned char *p = (void *)(long)ctx->data;

	return p[20];
}

char _license[] SEC("license") = "GPL";
