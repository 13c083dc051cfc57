// weft's WASM core: the exports the TypeScript wrapper (src/dataplane/wasm)
// binds to. Flat functions over integers and byte offsets into one linear
// memory laid out once by init(); nothing here allocates after that.
export { abi_version, configure, configure6, counters_base, init, layout } from "./layout";
export {
  lpm_clear, lpm_delete, lpm_get, lpm_groups, lpm_insert, lpm_lookup, lpm_lookup_batch,
  lpm_memory_bytes, lpm_size,
} from "./lpm";
export {
  lpm6_clear, lpm6_delete, lpm6_get, lpm6_groups, lpm6_insert, lpm6_lookup, lpm6_lookup_batch,
  lpm6_memory_bytes, lpm6_size,
} from "./lpm6";
export { peer_clear, peer_count, peer_find, peer_set } from "./peers";
export { csum_replace16, csum_replace32, inet_csum, inet_sum } from "./checksum";
export { flow_hash, flow_sport, jhash_3words } from "./flow";
export { encap_batch } from "./encap";
export { decap_batch, decap6_batch } from "./decap";
export { peer6_find, peer6_set, peer6_underlay } from "./peers6";
export { tun_set_mtu, tun_set_udp_segs, tun_units } from "./units";
export { tun_tx_batch } from "./tun-tx";
export { tun_rx_batch } from "./tun-rx";
