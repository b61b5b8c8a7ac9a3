import { CairnError } from '../../errors.js';
import type { Backend, BackendTraits, ByteRange, ObjectInfo, WriteOptions } from './backend.js';

/**
 * A backend whose implementation is loaded on first use. The AWS SDK takes ~0.2 s of CPU to
 * import; commands on local repositories should not pay that for S3 support they never use.
 */
export class DeferredBackend implements Backend {
  #backend: Promise<Backend> | undefined;
  #closed = false;

  constructor(
    readonly location: string,
    private readonly load: () => Promise<Backend>,
    /** Those of the backend `load` will make: known before it is loaded. */
    readonly traits?: BackendTraits,
  ) {}

  async *list(folder: string): AsyncIterable<ObjectInfo> {
    yield* (await this.#get()).list(folder);
  }

  async read(name: string, range?: ByteRange): Promise<Buffer> {
    return (await this.#get()).read(name, range);
  }

  async write(
    name: string,
    data: Uint8Array | readonly Uint8Array[],
    opts?: WriteOptions,
  ): Promise<void> {
    return (await this.#get()).write(name, data, opts);
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    return (await this.#get()).stat(name);
  }

  async delete(name: string): Promise<void> {
    return (await this.#get()).delete(name);
  }

  async now(): Promise<number> {
    const backend = await this.#get();
    return backend.now ? backend.now() : Date.now();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#backend) await (await this.#backend).close();
  }

  #get(): Promise<Backend> {
    if (this.#closed) throw new CairnError(`backend ${this.location} is closed`);
    this.#backend ??= this.load();
    return this.#backend;
  }
}
