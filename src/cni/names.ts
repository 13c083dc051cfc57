/**
 * The names and paths of a CNI invocation that reach the kernel or an
 * iproute2 batch line (CNI_IFNAME, the "bridge" of the config, CNI_NETNS,
 * CNI_CONTAINERID), checked before anything runs. Each check returns why a
 * value is unusable, or undefined; request.ts turns that into the spec's
 * error. links.ts checks again, right where a batch line is built.
 *
 * Interface names follow the kernel's dev_valid_name (net/core/dev.c: 1 to
 * IFNAMSIZ-1 = 15 bytes, not "." or "..", no '/', ':' or isspace(), which
 * in the kernel's ctype includes the byte 0xa0), minus what else could be
 * read as something other than a name:
 * - iproute2's batch reader (lib/utils.c) cuts a line at '#' (getcmdline),
 *   joins a line ending in a backslash with the next one, and splits words
 *   on " \t\r\n" with ' and " as quotes (makeargs); an unterminated quote
 *   makes the whole `ip -batch` process exit;
 * - the kernel expands a '%' in a new link's name as a template ("eth%d");
 * - control and non-ASCII bytes (0xa0 is in many UTF-8 sequences);
 * - and, as defence in depth, whatever a shell or another tool reading the
 *   name could take for something else (; | & $ ` < > * ? ( ) and the like,
 *   a leading "-" read as an option).
 * So: 1-15 characters of letters, digits, "_", "." and "-", not starting
 * with "." or "-" (the names runtimes use: eth0, net1, vlan.100, br-data).
 */

/** Characters an iproute2 batch line interprets: whitespace, quotes, backslash, comment. */
const BATCH_SPECIAL = /[\s'"\\#]/;
/** A character outside the allowed set. */
const IFNAME_BAD = /[^A-Za-z0-9_.-]/;
const CONTROL = /[\x00-\x1f\x7f]/;
/** CNI spec: a container ID starts with an alphanumeric, then alphanumerics, _ . - */
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
export const MAX_CONTAINER_ID = 256;
/** PATH_MAX includes the terminating NUL. */
const MAX_PATH = 4095;

export const IFNAME_RULE = 'use 1-15 characters: letters, digits, "_", "." and "-", starting with a letter, digit or "_"';
export const NETNS_RULE = "the runtime must pass the absolute path of the pod's network namespace file, e.g. /var/run/netns/cni-1234, without spaces, quotes, backslashes, '#' or control characters";

/** A value as it can be shown in a message: quoted, escaped, and cut short. */
export function show(v: unknown, max = 64): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

function describeChar(c: string): string {
  if (c === " ") return "a space";
  if (c === "\t") return "a tab";
  if (c === "\n") return "a newline";
  if (c === "\r") return "a carriage return";
  const cp = c.codePointAt(0) ?? 0;
  const u = `U+${cp.toString(16).toUpperCase().padStart(4, "0")}`;
  if (cp < 0x20 || cp === 0x7f) return `the control character ${u}`;
  if (cp > 0x7e) return `the non-ASCII character ${u}`;
  return `"${c}"`;
}

/** Why `name` cannot be an interface name weft creates or names in a command, or undefined. */
export function ifnameProblem(name: string): string | undefined {
  const bytes = Buffer.byteLength(name, "utf8");
  if (bytes === 0) return "it is empty";
  if (name === "." || name === "..") return `the kernel does not allow "${name}"`;
  const bad = IFNAME_BAD.exec(name);
  if (bad) return `it holds ${describeChar(bad[0])}`;
  if (name.startsWith("-") || name.startsWith(".")) return `it starts with "${name[0]}"`;
  if (bytes > 15) return `it is ${bytes} bytes long, the kernel allows at most 15`;
  return undefined;
}

/** Why `path` cannot be CNI_NETNS, or undefined. Only the path is checked here; links.ts checks what it names. */
export function netnsProblem(path: string): string | undefined {
  if (!path.startsWith("/")) return "is not an absolute path";
  const ctl = CONTROL.exec(path);
  if (ctl) return `may not hold ${describeChar(ctl[0])}`;
  const special = BATCH_SPECIAL.exec(path);
  if (special) return `may not hold ${describeChar(special[0])}`;
  if (Buffer.byteLength(path, "utf8") > MAX_PATH) return `is longer than ${MAX_PATH} bytes`;
  return undefined;
}

/** Why `id` cannot be CNI_CONTAINERID, or undefined. */
export function containerIdProblem(id: string): string | undefined {
  if (id.length > MAX_CONTAINER_ID) return `is longer than ${MAX_CONTAINER_ID} characters`;
  if (!CONTAINER_ID.test(id)) return "is not a container ID (the CNI spec: a letter or digit, then letters, digits, _ . -)";
  return undefined;
}

/** True when `word` can stand as one word of an iproute2 batch line exactly as written. */
export function batchSafe(word: string): boolean {
  return word.length > 0 && !BATCH_SPECIAL.test(word) && !CONTROL.test(word);
}
