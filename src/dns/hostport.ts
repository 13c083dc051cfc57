/** "198.51.100.1", "198.51.100.1:5353", "[2001:db8::1]:53", "2001:db8::1" → host and port (53 when absent). Not validated here. */
export function splitHostPort(text: string, defaultPort = 53): { host: string; port: number } {
  const t = text.trim();
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (v6) return { host: v6[1]!, port: v6[2] ? Number(v6[2]) : defaultPort };
  const parts = t.split(":");
  if (parts.length === 2) return { host: parts[0]!, port: Number(parts[1]) };
  return { host: t, port: defaultPort }; // an address without a port (IPv6 has more than one ":")
}

/** host:port, IPv6 in brackets. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
