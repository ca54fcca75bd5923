/**
 * Pulls exact byte counts out of a stream of arbitrarily sized chunks without copying more than
 * needed. Used by the tar reader, which must see 512-byte headers whole but wants entry bodies
 * passed through as they come.
 */
export class ByteReader {
  readonly #source: AsyncIterator<Uint8Array>;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #done = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.#source = source[Symbol.asyncIterator]();
  }

  async #fill(): Promise<boolean> {
    if (this.#done) return false;
    const next = await this.#source.next();
    if (next.done) {
      this.#done = true;
      return false;
    }
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
    if (chunk.length > 0) {
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.length;
    }
    return true;
  }

  /** Reads exactly `n` bytes, or returns what is left (possibly fewer, possibly empty) at the end. */
  async readUpTo(n: number): Promise<Buffer> {
    while (this.#pendingBytes < n && (await this.#fill()));
    const take = Math.min(n, this.#pendingBytes);
    const whole = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending);
    const out = whole.subarray(0, take);
    const rest = whole.subarray(take);
    this.#pending = rest.length > 0 ? [rest] : [];
    this.#pendingBytes = rest.length;
    return out;
  }

  /** Yields exactly `n` bytes in pieces as they arrive; returns early only at the end of input. */
  async *stream(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.#pendingBytes === 0 && !(await this.#fill())) return;
      const head = this.#pending[0]!;
      if (head.length <= left) {
        this.#pending.shift();
        this.#pendingBytes -= head.length;
        left -= head.length;
        yield head;
      } else {
        this.#pending[0] = head.subarray(left);
        this.#pendingBytes -= left;
        const piece = head.subarray(0, left);
        left = 0;
        yield piece;
      }
    }
  }

  /** Consumes the rest of the input and returns how many bytes there were. */
  async drain(): Promise<number> {
    let total = this.#pendingBytes;
    this.#pending = [];
    this.#pendingBytes = 0;
    while (await this.#fill()) {
      total += this.#pendingBytes;
      this.#pending = [];
      this.#pendingBytes = 0;
    }
    return total;
  }

  /** Stops the underlying stream early (e.g. after the entry we wanted). */
  async close(): Promise<void> {
    this.#done = true;
    await this.#source.return?.();
  }
}
