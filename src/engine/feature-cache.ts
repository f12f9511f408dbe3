/**
 * FeatureCache: model features (image embeddings, text embeddings) kept between requests.
 *
 * - Byte-accurate: every entry counts the exact bytes of its tensors (device or host); after an
 *   insertion the cached total is within the budget (least recently used entries leave first).
 * - Entries expire `ttlMs` after their last use.
 * - Single flight: concurrent requests for the same missing key share one computation.
 * - Leases: a request leases each value it uses, synchronously, before it awaits anything; an
 *   entry evicted meanwhile leaves the cache (and its budget) at once, and its native memory is
 *   released when the last lease ends. Device memory returns without waiting for a garbage
 *   collection, and never while a request still uses it.
 */

/** What the cache holds: something with a known size that can drop its memory. */
export interface CachedValue {
  readonly byteSize: number;
  /** Frees the native memory behind this handle; later use is an error. */
  release(): void;
}

export interface FeatureCacheOptions {
  /** Total budget in bytes; 0 disables caching (every lookup computes). */
  maxBytes: number;
  /** Idle lifetime of an entry, milliseconds (0: entries expire at the next lookup). */
  ttlMs: number;
  /** Clock for expiry. */
  now?: () => number;
}

export interface CacheStats {
  hits: number;
  misses: number;
  evictions: number;
  expirations: number;
  entries: number;
  bytes: number;
  maxBytes: number;
}

/** A value in use by one request; call release() when done (more calls do nothing). */
export interface Lease<V> {
  readonly value: V;
  /** True when the value came from the cache or from a computation already in flight. */
  readonly hit: boolean;
  release(): void;
}

class Slot<V extends CachedValue> {
  users = 0;
  cached = false;
  lastUsed = 0;
  value: V | undefined;
  ready!: Promise<V>;

  /** Frees the value once it is neither cached nor leased. */
  settle(): void {
    if (!this.cached && this.users === 0 && this.value !== undefined) {
      this.value.release();
      this.value = undefined;
    }
  }
}

export class FeatureCache<V extends CachedValue> {
  // A Map iterates in insertion order: re-inserting on use keeps it in LRU order.
  private readonly slots = new Map<string, Slot<V>>();
  private readonly pending = new Map<string, Slot<V>>();
  private bytes = 0;
  private readonly now: () => number;
  private readonly counters = { hits: 0, misses: 0, evictions: 0, expirations: 0 };

  constructor(private readonly options: FeatureCacheOptions) {
    if (!(options.maxBytes >= 0) || !(options.ttlMs >= 0)) {
      throw new RangeError('FeatureCache needs maxBytes >= 0 and ttlMs >= 0');
    }
    this.now = options.now ?? Date.now;
  }

  /** The value for `key`: from the cache, from a computation in flight, or from `compute`. */
  async acquire(key: string, compute: () => Promise<V>): Promise<Lease<V>> {
    const [lease] = await this.acquireMany([key], async () => [await compute()]);
    return lease;
  }

  /**
   * Leases for several keys, in order. The keys neither cached nor in flight are computed by
   * ONE call of `computeMissing` (e.g. one batched encoder call), which returns one value per
   * key it is given, in order. A repeated key gets one lease per occurrence.
   */
  async acquireMany(
    keys: readonly string[],
    computeMissing: (missing: string[]) => Promise<V[]>,
  ): Promise<Lease<V>[]> {
    this.expire();
    const missing = [...new Set(keys)].filter((k) => !this.slots.has(k) && !this.pending.has(k));
    if (missing.length > 0) this.startComputation(missing, computeMissing);

    // Lease everything before the first await: nothing can be freed under this request.
    const taken = keys.map((key) => {
      const slot = (this.slots.get(key) ?? this.pending.get(key)) as Slot<V>;
      const hit = !missing.includes(key);
      if (hit) this.counters.hits += 1;
      if (slot.cached) this.touch(key, slot);
      slot.users += 1;
      return { slot, hit };
    });
    const leases = taken.map(({ slot, hit }) => this.lease(slot, hit));
    try {
      await Promise.all(taken.map(({ slot }) => slot.ready));
    } catch (error) {
      for (const lease of leases) lease.release();
      throw error;
    }
    return leases;
  }

  /** Drops every entry; values in use are freed when their last lease ends. */
  clear(): void {
    for (const [key, slot] of this.slots) this.drop(key, slot);
  }

  stats(): CacheStats {
    return {
      ...this.counters,
      entries: this.slots.size,
      bytes: this.bytes,
      maxBytes: this.options.maxBytes,
    };
  }

  private startComputation(
    missing: string[],
    computeMissing: (missing: string[]) => Promise<V[]>,
  ): void {
    this.counters.misses += missing.length;
    const batch = computeMissing(missing).then((values) => {
      if (values.length !== missing.length) {
        for (const value of values) value.release();
        throw new Error(`computed ${values.length} features for ${missing.length} keys`);
      }
      return values;
    });
    missing.forEach((key, index) => {
      const slot = new Slot<V>();
      slot.ready = batch.then(
        (values) => {
          this.pending.delete(key);
          slot.value = values[index];
          this.store(key, slot);
          slot.settle(); // not stored and nobody waiting: free it now
          return values[index];
        },
        (error: unknown) => {
          this.pending.delete(key);
          throw error;
        },
      );
      // Waiters observe failures through their own await; this keeps Node from reporting an
      // unhandled rejection when every waiter has already given up.
      slot.ready.catch(() => undefined);
      this.pending.set(key, slot);
    });
  }

  private lease(slot: Slot<V>, hit: boolean): Lease<V> {
    let released = false;
    return {
      get value(): V {
        if (slot.value === undefined) throw new Error('feature lease used before it was ready');
        return slot.value;
      },
      hit,
      release: () => {
        if (released) return;
        released = true;
        slot.users -= 1;
        slot.settle();
      },
    };
  }

  private touch(key: string, slot: Slot<V>): void {
    slot.lastUsed = this.now();
    this.slots.delete(key);
    this.slots.set(key, slot);
  }

  private store(key: string, slot: Slot<V>): void {
    const size = (slot.value as V).byteSize;
    if (size > this.options.maxBytes) return; // too large, or caching off: used once, freed
    for (const [oldKey, old] of this.slots) {
      if (this.bytes + size <= this.options.maxBytes) break;
      this.drop(oldKey, old);
      this.counters.evictions += 1;
    }
    slot.cached = true;
    slot.lastUsed = this.now();
    this.slots.set(key, slot);
    this.bytes += size;
  }

  private expire(): void {
    const cutoff = this.now() - this.options.ttlMs;
    for (const [key, slot] of this.slots) {
      // LRU order: the first entry that is fresh enough ends the scan.
      if (slot.lastUsed > cutoff) break;
      this.drop(key, slot);
      this.counters.expirations += 1;
    }
  }

  private drop(key: string, slot: Slot<V>): void {
    this.slots.delete(key);
    this.bytes -= (slot.value as V).byteSize;
    slot.cached = false;
    slot.settle();
  }
}
