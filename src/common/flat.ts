/**
 * The same text as one flat string. V8 keeps a string made by `+` or a
 * template literal (13 characters or more) as a tree of pieces, 32 bytes a
 * node, and a `slice` of a longer string as a view that keeps the whole
 * string alive; either costs about twice the text. Strings the agent keeps
 * per lease (at 20,000 leases, in several maps) are made flat here once. A
 * JSON round trip is the cheapest copy that V8 always builds flat (a join
 * of one element, or of the text and "", may return the tree itself).
 */
export function flat(s: string): string {
  return s.length < 13 ? s : (JSON.parse(JSON.stringify(s)) as string);
}
