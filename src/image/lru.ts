/**
 * A small LRU map bounded by total weight (entry count by default). Map iteration order is
 * insertion order, so re-inserting on access keeps the least recently used entry first.
 */
export class LruCache<K, V> {
  private readonly map = new Map<K, { value: V; weight: number }>();
  private total = 0;

  constructor(private readonly capacity: number) {}

  get(key: K): V | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    this.map.delete(key);
    this.map.set(key, hit);
    return hit.value;
  }

  set(key: K, value: V, weight = 1): void {
    this.delete(key);
    this.map.set(key, { value, weight });
    this.total += weight;
    for (const [k, v] of this.map) {
      if (this.total <= this.capacity || this.map.size === 1) break;
      this.map.delete(k);
      this.total -= v.weight;
    }
  }

  /** The value without touching recency. */
  peek(key: K): V | undefined {
    return this.map.get(key)?.value;
  }

  delete(key: K): void {
    const old = this.map.get(key);
    if (!old) return;
    this.map.delete(key);
    this.total -= old.weight;
  }
}
