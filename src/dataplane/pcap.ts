/**
 * A minimal pcap (libpcap 2.4) writer: enough to hand frames the core built
 * to tshark/Wireshark for dissection, in tests and when debugging a node.
 */

/** LINKTYPE_RAW: each record starts with an IPv4 or IPv6 header. */
export const LINKTYPE_RAW = 101;
/** LINKTYPE_ETHERNET: each record starts with an Ethernet header. */
export const LINKTYPE_ETHERNET = 1;

export function pcapFile(frames: readonly Uint8Array[], linktype = LINKTYPE_RAW, snaplen = 262144): Uint8Array {
  const size = 24 + frames.reduce((n, f) => n + 16 + f.length, 0);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  v.setUint32(0, 0xa1b2c3d4, true); // magic, microsecond timestamps
  v.setUint16(4, 2, true);
  v.setUint16(6, 4, true);
  v.setUint32(16, snaplen, true);
  v.setUint32(20, linktype, true);
  let at = 24;
  const now = Date.now();
  frames.forEach((f, i) => {
    v.setUint32(at, Math.floor(now / 1000), true);
    v.setUint32(at + 4, ((now % 1000) * 1000 + i) % 1_000_000, true);
    v.setUint32(at + 8, f.length, true);
    v.setUint32(at + 12, f.length, true);
    out.set(f, at + 16);
    at += 16 + f.length;
  });
  return out;
}
