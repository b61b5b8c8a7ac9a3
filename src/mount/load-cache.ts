import { LruCache } from '../image/lru.js';

/** Decoded objects by key, bounded by weight; concurrent loads of one key share one load. */
export class LoadCache<T> {
  private readonly done: LruCache<string, T>;
  private readonly loading = new Map<string, Promise<T>>();

  constructor(
    capacity: number,
    private readonly weigh: (value: T) => number,
  ) {
    this.done = new LruCache(capacity);
  }

  /** The value cached under `key`, loaded first if needed; a failed load is not kept. */
  async get(key: string, load: () => Promise<T>): Promise<T> {
    const hit = this.done.get(key);
    if (hit) return hit;
    let p = this.loading.get(key);
    if (!p) {
      p = load()
        .then((value) => {
          this.done.set(key, value, this.weigh(value));
          return value;
        })
        .finally(() => this.loading.delete(key));
      this.loading.set(key, p);
    }
    return p;
  }
}
