import { Gauge, type Registry } from "prom-client";

/**
 * weft_datapath_variant{path,variant} 1: which variant of each data-path
 * piece that has a fast and a slow one is in use (NetworkStatus.paths, e.g.
 * attach=tcx or tc for the ebpf backend, offloads, udp_gro and udp_gso_segs for the tun
 * backend), read at scrape time so it follows a device recreated with other
 * offloads. No series before the backend is registered, none for the vxlan
 * backend (it has no variants).
 */
export function registerDatapathVariants(registry: Registry, paths: () => Readonly<Record<string, string>> | undefined): Gauge {
  return new Gauge({
    name: "weft_datapath_variant",
    help: "1 for the variant of each fast/slow data-path piece in use (ebpf attach: tcx|tc; tun offloads: csum,tso4,tso6,uso4,uso6|...; tun udp_gro: on|off; tun udp_gso_segs: 128|64)",
    labelNames: ["path", "variant"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [path, variant] of Object.entries(paths() ?? {})) this.set({ path, variant }, 1);
    },
  });
}
