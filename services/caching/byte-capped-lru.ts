/**
 * Entries in least-recently-used order under a cap on the bytes in use: making room for more evicts idle entries, the
 * least recently used first, until the bytes fit. What an entry holds and what evicting it frees are the owner's:
 * the target's sequence cache drops the entry with its KV cache, the draft's sequence table keeps the sequence and
 * drops only its drafter's cache.
 */
export interface ByteCappedLruOptions<K, V> {
  readonly capacityBytes: number;
  /** Bytes in use now, counted against the cap: the entries' and whatever else shares the cap. */
  readonly usedBytes: () => number;
  /** Bytes evicting the entry would free now (0: nothing to evict). */
  readonly bytesOf: (key: K, value: V) => number;
  /** Frees what the entry holds (`bytes` of it). The entry keeps its place unless this deletes it. */
  readonly evict: (key: K, value: V, bytes: number) => void;
}

export class ByteCappedLru<K, V> {
  /** Least recently used first (Map iteration order). */
  readonly #entries = new Map<K, V>();
  #evictions = 0;

  constructor(readonly options: ByteCappedLruOptions<K, V>) {}

  /** The entry, its recency unchanged. */
  get(key: K): V | undefined {
    return this.#entries.get(key);
  }

  /** Sets the entry as the most recently used. */
  set(key: K, value: V): void {
    this.#entries.delete(key);
    this.#entries.set(key, value);
  }

  delete(key: K): boolean {
    return this.#entries.delete(key);
  }

  /** Least recently used first. */
  values(): IterableIterator<V> {
    return this.#entries.values();
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Whether `bytes` more fit under the cap now. */
  fits(bytes: number): boolean {
    return this.options.usedBytes() + bytes <= this.options.capacityBytes;
  }

  /**
   * Evicts entries least recently used first, never a `busy` one nor one that holds nothing, until `bytes` more fit
   * under the cap or none is left to evict. Returns the keys evicted.
   */
  makeRoom(bytes: number, busy: (key: K, value: V) => boolean = () => false): K[] {
    const evicted: K[] = [];
    if (this.fits(bytes)) return evicted;
    for (const [key, value] of this.#entries) {
      if (busy(key, value)) continue;
      const held = this.options.bytesOf(key, value);
      if (held === 0) continue;
      this.options.evict(key, value, held);
      evicted.push(key);
      this.#evictions++;
      if (this.fits(bytes)) break;
    }
    return evicted;
  }

  /** Entries evicted since start. */
  get evictions(): number {
    return this.#evictions;
  }
}
