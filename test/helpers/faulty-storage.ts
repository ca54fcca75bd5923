import type { Abortable, GetOptions, ObjectInfo, Storage } from '@strata/sdk';
import { LocalStorage } from '@strata/sdk';

/**
 * A local storage whose writes fail with ENOSPC once `budget` bytes have been written in total,
 * like a disk that fills up mid-backup. Used where a real small filesystem cannot be mounted.
 */
export class DiskFullStorage implements Storage {
  readonly #inner: LocalStorage;
  #budget: number;
  readonly capabilities;
  readonly location: string;

  constructor(root: string, budget: number) {
    this.#inner = new LocalStorage(root);
    this.#budget = budget;
    this.capabilities = this.#inner.capabilities;
    this.location = this.#inner.location;
  }

  /** Refills the disk (e.g. after an operator freed space). */
  setBudget(bytes: number): void {
    this.#budget = bytes;
  }

  #spend(n: number): void {
    this.#budget -= n;
    if (this.#budget < 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
  }

  put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options?: Abortable): Promise<ObjectInfo> {
    const spend = (n: number): void => this.#spend(n);
    if (body instanceof Uint8Array) {
      return Promise.resolve()
        .then(() => spend(body.byteLength))
        .then(() => this.#inner.put(key, body, options));
    }
    const metered = (async function* () {
      for await (const chunk of body) {
        spend(chunk.byteLength);
        yield chunk;
      }
    })();
    return this.#inner.put(key, metered, options);
  }

  get(key: string, options?: GetOptions) {
    return this.#inner.get(key, options);
  }
  read(key: string) {
    return this.#inner.read(key);
  }
  stat(key: string) {
    return this.#inner.stat(key);
  }
  list(prefix: string) {
    return this.#inner.list(prefix);
  }
  delete(key: string) {
    return this.#inner.delete(key);
  }
  createExclusive(key: string, body: Uint8Array, options?: Abortable) {
    return Promise.resolve()
      .then(() => this.#spend(body.byteLength))
      .then(() => this.#inner.createExclusive(key, body, options));
  }
  space() {
    return this.#inner.space();
  }
  exists() {
    return this.#inner.exists();
  }
  sweepTemp() {
    return this.#inner.sweepTemp();
  }
}
