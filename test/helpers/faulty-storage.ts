import type { Abortable, GetOptions, ObjectInfo, Storage } from '@strata/sdk';
import { LocalStorage, wrapError } from '@strata/sdk';

/**
 * A local storage on a disk with `budget` bytes free: writes fail with ENOSPC once they would take
 * more, like a disk that fills up mid-backup; a failed write's temporary data and deleted or
 * replaced objects give their bytes back, as on a real disk. Used where a real small filesystem
 * cannot be mounted.
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

  /** Sets the free space (e.g. after an operator freed some). */
  setBudget(bytes: number): void {
    this.#budget = bytes;
  }

  #spend(n: number): void {
    this.#budget -= n;
    if (this.#budget < 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
  }

  async #sizeOf(key: string): Promise<number> {
    return this.#inner.stat(key).then(
      (info) => info.size,
      () => 0,
    );
  }

  async put(key: string, body: AsyncIterable<Uint8Array> | Uint8Array, options?: Abortable): Promise<ObjectInfo> {
    const replaced = await this.#sizeOf(key);
    let spent = 0;
    const spend = (n: number): void => {
      spent += n;
      this.#spend(n);
    };
    try {
      let info: ObjectInfo;
      if (body instanceof Uint8Array) {
        spend(body.byteLength);
        info = await this.#inner.put(key, body, options);
      } else {
        const metered = (async function* () {
          for await (const chunk of body) {
            spend(chunk.byteLength);
            yield chunk;
          }
        })();
        info = await this.#inner.put(key, metered, options);
      }
      this.#budget += replaced;
      return info;
    } catch (err) {
      // The storage removed what it had written of the object; the error is the one a real
      // storage gives (LocalStorage wraps ENOSPC as NO_SPACE), whichever path the bytes took.
      this.#budget += spent;
      throw wrapError(`storage: write ${key}`, err);
    }
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
  async delete(key: string) {
    const size = await this.#sizeOf(key);
    await this.#inner.delete(key);
    this.#budget += size;
  }
  async createExclusive(key: string, body: Uint8Array, options?: Abortable) {
    let created = false;
    try {
      this.#spend(body.byteLength);
      created = await this.#inner.createExclusive(key, body, options);
      return created;
    } finally {
      if (!created) this.#budget += body.byteLength;
    }
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

/**
 * A local storage whose reads of the objects under `failing.prefix` fail with EIO once
 * `failing.afterBytes` of them were read, as a disk read error or a download cut part way does;
 * `opened` lists every object read, in the order they were opened.
 */
export class ReadFaultStorage extends DiskFullStorage {
  readonly opened: string[] = [];
  readonly #failing: { readonly prefix: string; readonly afterBytes: number; readonly fault?: () => Error };

  /** `fault` makes the error thrown (default: a disk's EIO). */
  constructor(root: string, failing: { readonly prefix: string; readonly afterBytes: number; readonly fault?: () => Error }) {
    super(root, Number.MAX_SAFE_INTEGER);
    this.#failing = failing;
  }

  override async get(key: string, options?: GetOptions): Promise<AsyncIterable<Uint8Array>> {
    this.opened.push(key);
    const body = await super.get(key, options);
    if (!key.startsWith(this.#failing.prefix)) return body;
    const { afterBytes, fault = () => Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO', errno: -5, syscall: 'read' }) } = this.#failing;
    return (async function* () {
      let seen = 0;
      for await (const chunk of body) {
        if (seen + chunk.byteLength > afterBytes) {
          yield chunk.subarray(0, afterBytes - seen);
          throw fault();
        }
        seen += chunk.byteLength;
        yield chunk;
      }
    })();
  }
}
