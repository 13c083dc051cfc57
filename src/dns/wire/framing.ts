/** The largest DNS message over TCP: its length is a 16-bit prefix (RFC 1035 §4.2.2). */
export const MAX_TCP_MESSAGE = 65535;

/**
 * Reads length-prefixed DNS messages (RFC 1035 §4.2.2, RFC 7766 §8) from a
 * byte stream, chunk by chunk, holding at most one message: its bytes go
 * straight into a buffer of the announced length. Chunks are never
 * concatenated, so a message trickled a byte at a time costs its length, not
 * its length squared, and nothing beyond prefix + message is ever kept.
 */
export class FrameReader {
  /** The first byte of a length prefix, while only that has arrived; -1 otherwise. */
  private hi = -1;
  private msg: Buffer | undefined;
  private have = 0;
  private done: Buffer | undefined;

  /** A message has begun (at least one byte of its prefix) and is not complete. */
  get inMessage(): boolean {
    return this.hi >= 0 || this.msg !== undefined;
  }

  /** Bytes held for the message being read (prefix included). */
  get buffered(): number {
    return this.hi >= 0 ? 1 : this.msg ? 2 + this.have : 0;
  }

  /**
   * Consumes bytes of `chunk` from `at` until a message completes or the
   * chunk ends; returns the offset after what was consumed. A completed
   * message is then available from `take()`.
   */
  feed(chunk: Buffer, at: number): number {
    let p = at;
    while (p < chunk.length) {
      if (!this.msg) {
        if (this.hi < 0) {
          this.hi = chunk[p++]!;
          continue;
        }
        const len = (this.hi << 8) | chunk[p++]!;
        this.hi = -1;
        this.msg = Buffer.allocUnsafe(len);
        this.have = 0;
      }
      const n = Math.min(this.msg.length - this.have, chunk.length - p);
      chunk.copy(this.msg, this.have, p, p + n);
      this.have += n;
      p += n;
      if (this.have === this.msg.length) {
        this.done = this.msg;
        this.msg = undefined;
        return p;
      }
    }
    return p;
  }

  /** The message `feed` completed, once. */
  take(): Buffer | undefined {
    const m = this.done;
    this.done = undefined;
    return m;
  }
}

/** A message with its two-byte length prefix. */
export function frame(msg: Buffer, len = msg.length): Buffer {
  const f = Buffer.allocUnsafe(2 + len);
  f.writeUInt16BE(len, 0);
  msg.copy(f, 2, 0, len);
  return f;
}
