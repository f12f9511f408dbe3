/**
 * FeatureCache: model features (image embeddings, text embeddings) kept between requests.
 *
 * - One byte budget covers every feature byte held for the cache: computations in flight (at
 *   the size the caller expects, from the bundle's shapes; the real size once known), cached
 *   entries, and entries evicted or expired while a request still leases them (until their
 *   last lease ends). At every moment in flight + cached + leased <= maxBytes.
 * - Admission: a computation that does not fit, even after evicting every cached entry no
 *   request uses (least recently used first), still runs but is not cached: its waiters get
 *   the value and it is freed after their last lease (counted in `uncached` and, while held,
 *   in `uncountedBytes`). A request never waits for room and never fails for lack of it.
 * - Entries expire `ttlMs` after their last use, on a timer (unref'd; stopped by close()).
 * - Single flight: concurrent requests for the same missing key share one computation.
 * - Leases: a request leases each value it uses, synchronously, before it awaits anything; a
 *   value's native memory is released when it is neither cached nor leased. Device memory
 *   returns without waiting for a garbage collection, and never while a request still uses it.
 * - clear() also covers computations in flight: their results go to their waiters only.
 * - Cancellation: a request that gives up (its signal aborts) stops waiting at once; a
 *   computation all of whose waiters gave up is aborted (its model call, still queued, is
 *   dropped) and left to them: the next request for its keys computes them anew.
 */
import { throwIfCancelled, untilAborted } from './admission';

/** What the cache holds: something with a known size that can drop its memory. */
export interface CachedValue {
  readonly byteSize: number;
  /** Frees the native memory behind this handle; later use is an error. */
  release(): void;
}

export interface AcquireOptions {
  /** The request's signal: aborted, it stops waiting (RequestCancelledError). */
  signal?: AbortSignal;
}

export interface FeatureCacheOptions {
  /** Total budget in bytes; 0 disables caching (every lookup computes). */
  maxBytes: number;
  /** Idle lifetime of an entry, milliseconds (0: entries expire at once). */
  ttlMs: number;
  /** Clock for expiry (the timer itself runs on real time). */
  now?: () => number;
}

export interface CacheStats {
  hits: number;
  misses: number;
  evictions: number;
  expirations: number;
  /** Computed values not cached because the budget had no room for them. */
  uncached: number;
  /** Cached entries. */
  entries: number;
  /** Keys being computed. */
  inFlight: number;
  /** Bytes of the cached entries. */
  bytes: number;
  /** Bytes reserved for computations in flight that will be cached. */
  inFlightBytes: number;
  /** Bytes of values no longer cached (evicted, expired, cleared) that requests still lease. */
  leasedBytes: number;
  /** bytes + inFlightBytes + leasedBytes: what the budget covers; never above maxBytes. */
  heldBytes: number;
  /** Bytes of uncached values, in flight (expected size) or in use, outside the budget. */
  uncountedBytes: number;
  maxBytes: number;
}

/** A value in use by one request; call release() when done (more calls do nothing). */
export interface Lease<V> {
  readonly value: V;
  /** True when the value came from the cache or from a computation already in flight. */
  readonly hit: boolean;
  release(): void;
}

/**
 * The bytes a computation is expected to produce: one number for every key, or one per key.
 * 0 (unknown) reserves nothing while in flight; the real size is still charged on arrival.
 */
export type ExpectedBytes = number | ((key: string) => number);

/** Upper bound for one expiry timer (setTimeout clamps larger delays to 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * One computation of missing keys, shared by every request waiting for one of them. Its
 * signal aborts once every waiter has given up (each had a signal, and each aborted): the
 * computation is then not wanted, and a model call still queued for it can be dropped.
 */
class Computation {
  readonly controller = new AbortController();
  /** Waiters that may still give up. */
  waiting = 0;
  /** A waiter came without a signal: it never gives up. */
  pinned = false;
  done = false;
}

class Slot<V extends CachedValue> {
  users = 0;
  pending = true;
  cached = false;
  lastUsed = 0;
  /** Bytes charged to the budget for this slot (0: outside it). */
  charged = 0;
  /** Expected size while in flight, then the real one. */
  size: number;
  /** Set by clear() and close(): the result must not be cached. */
  discarded = false;
  value: V | undefined;
  ready!: Promise<V>;

  constructor(
    readonly key: string,
    expected: number,
    readonly computation: Computation,
  ) {
    this.size = expected;
  }
}

export class FeatureCache<V extends CachedValue> {
  // A Map iterates in insertion order: re-inserting on use keeps it in LRU order, which is
  // also expiry order (lastUsed only grows along it).
  private readonly slots = new Map<string, Slot<V>>();
  private readonly pending = new Map<string, Slot<V>>();
  /** Every slot whose memory is or will be held: in flight, cached, or leased. */
  private readonly live = new Set<Slot<V>>();
  /** Sum of `charged` over live slots. */
  private held = 0;
  private readonly now: () => number;
  private readonly counters = { hits: 0, misses: 0, evictions: 0, expirations: 0, uncached: 0 };
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly options: FeatureCacheOptions) {
    if (!(options.maxBytes >= 0) || !(options.ttlMs >= 0)) {
      throw new RangeError('FeatureCache needs maxBytes >= 0 and ttlMs >= 0');
    }
    this.now = options.now ?? Date.now;
  }

  /** The value for `key`: from the cache, from a computation in flight, or from `compute`. */
  async acquire(
    key: string,
    compute: (signal: AbortSignal) => Promise<V>,
    expectedBytes: ExpectedBytes = 0,
    options: AcquireOptions = {},
  ): Promise<Lease<V>> {
    const [lease] = await this.acquireMany(
      [key],
      async (_missing, signal) => [await compute(signal)],
      expectedBytes,
      options,
    );
    return lease;
  }

  /**
   * Leases for several keys, in order. The keys neither cached nor in flight are computed by
   * ONE call of `computeMissing` (e.g. one batched encoder call), which returns one value per
   * key it is given, in order. A repeated key gets one lease per occurrence.
   *
   * With `options.signal`, an abort rejects at once with RequestCancelledError; a computation
   * whose every waiter has aborted has its own signal (computeMissing's) aborted, and is not
   * joined by later requests, which compute the keys anew.
   */
  async acquireMany(
    keys: readonly string[],
    computeMissing: (missing: string[], signal: AbortSignal) => Promise<V[]>,
    expectedBytes: ExpectedBytes = 0,
    options: AcquireOptions = {},
  ): Promise<Lease<V>[]> {
    const { signal } = options;
    throwIfCancelled(signal, 'before the features');
    this.expire();
    // Lease what exists first, so that making room for the missing keys cannot evict it.
    const taken = keys.map((key) => {
      const slot = this.slots.get(key) ?? this.pending.get(key);
      if (slot === undefined) return undefined;
      this.counters.hits += 1;
      if (slot.cached) this.touch(slot);
      slot.users += 1;
      return { slot, hit: true };
    });
    const missing = [...new Set(keys.filter((_, index) => taken[index] === undefined))];
    if (missing.length > 0) this.startComputation(missing, computeMissing, expectedBytes);
    keys.forEach((key, index) => {
      if (taken[index] !== undefined) return;
      const slot = this.pending.get(key) as Slot<V>;
      slot.users += 1;
      taken[index] = { slot, hit: false };
    });
    const leased = taken as { slot: Slot<V>; hit: boolean }[];
    const leases = leased.map(({ slot, hit }) => this.lease(slot, hit));
    const computations = new Set(
      leased.filter(({ slot }) => slot.pending).map(({ slot }) => slot.computation),
    );
    for (const computation of computations) {
      if (signal === undefined) computation.pinned = true;
      else computation.waiting += 1;
    }
    try {
      await untilAborted(
        Promise.all(leased.map(({ slot }) => slot.ready)),
        signal,
        'while the features were computed',
      );
    } catch (error) {
      for (const lease of leases) lease.release();
      if (signal?.aborted === true) {
        for (const computation of computations) this.giveUp(computation);
      }
      throw error;
    }
    return leases;
  }

  /**
   * Drops every entry, and makes the computations in flight hand their results to their
   * waiters only; values in use are freed when their last lease ends. A later request for any
   * key computes it anew.
   */
  clear(): void {
    for (const slot of this.pending.values()) slot.discarded = true;
    this.pending.clear();
    for (const slot of [...this.slots.values()]) this.drop(slot);
    this.schedule();
  }

  /** clear(), stops the expiry timer, and caches nothing from now on (leases keep working). */
  close(): void {
    this.closed = true;
    this.clear();
  }

  stats(): CacheStats {
    let inFlightBytes = 0;
    let leasedBytes = 0;
    let uncountedBytes = 0;
    for (const slot of this.live) {
      if (slot.charged === 0) uncountedBytes += slot.size;
      else if (slot.pending) inFlightBytes += slot.charged;
      else if (!slot.cached) leasedBytes += slot.charged;
    }
    const bytes = this.held - inFlightBytes - leasedBytes;
    return {
      ...this.counters,
      entries: this.slots.size,
      inFlight: this.pending.size,
      bytes,
      inFlightBytes,
      leasedBytes,
      heldBytes: this.held,
      uncountedBytes,
      maxBytes: this.options.maxBytes,
    };
  }

  private startComputation(
    missing: string[],
    computeMissing: (missing: string[], signal: AbortSignal) => Promise<V[]>,
    expectedBytes: ExpectedBytes,
  ): void {
    this.counters.misses += missing.length;
    const expected = (key: string): number => {
      const bytes = typeof expectedBytes === 'number' ? expectedBytes : expectedBytes(key);
      return Number.isFinite(bytes) && bytes > 0 ? bytes : 0;
    };
    const computation = new Computation();
    const slots = missing.map((key) => new Slot<V>(key, expected(key), computation));
    // Reserve before computing, so that a burst of misses cannot overshoot the budget.
    for (const slot of slots) {
      this.live.add(slot);
      if (this.makeRoom(slot.size)) this.charge(slot, slot.size);
      this.pending.set(slot.key, slot);
    }
    let computed: Promise<V[]>;
    try {
      computed = computeMissing(missing, computation.controller.signal);
    } catch (error) {
      computed = Promise.reject(error);
    }
    computed.then(
      () => (computation.done = true),
      () => (computation.done = true),
    );
    const batch = computed.then((values) => {
      if (values.length !== missing.length) {
        for (const value of values) value.release();
        throw new Error(`computed ${values.length} features for ${missing.length} keys`);
      }
      return values;
    });
    slots.forEach((slot, index) => {
      slot.ready = batch.then(
        (values) => {
          this.arrive(slot, values[index]);
          return values[index];
        },
        (error: unknown) => {
          this.finishPending(slot);
          this.charge(slot, 0);
          this.live.delete(slot);
          throw error;
        },
      );
      // Waiters observe failures through their own await; this keeps Node from reporting an
      // unhandled rejection when every waiter has already given up.
      slot.ready.catch(() => undefined);
    });
  }

  /**
   * A waiter of `computation` gave up; the last one (when none came without a signal) aborts
   * it, and its keys stop being in flight: later requests start their own computation.
   */
  private giveUp(computation: Computation): void {
    computation.waiting -= 1;
    if (computation.waiting > 0 || computation.pinned || computation.done) return;
    for (const slot of this.live) {
      if (slot.computation !== computation) continue;
      slot.discarded = true;
      if (this.pending.get(slot.key) === slot) this.pending.delete(slot.key);
    }
    computation.controller.abort();
  }

  /** A computed value: cached when it may and fits, else handed to its waiters only. */
  private arrive(slot: Slot<V>, value: V): void {
    this.finishPending(slot);
    slot.value = value;
    slot.size = value.byteSize;
    const wanted = !slot.discarded && !this.closed && this.options.maxBytes > 0;
    // The real size replaces the reservation; room for it is made as for a new computation.
    this.charge(slot, 0);
    if (wanted && this.makeRoom(slot.size)) {
      this.charge(slot, slot.size);
      slot.cached = true;
      slot.lastUsed = this.now();
      this.slots.set(slot.key, slot);
      this.schedule();
      return;
    }
    if (wanted) this.counters.uncached += 1;
    // Cleared while in flight: leased (and counted) while it fits, like an evicted entry.
    if (slot.users > 0 && this.held + slot.size <= this.options.maxBytes) {
      this.charge(slot, slot.size);
    }
    this.settle(slot); // not cached and nobody waiting: free it now
  }

  private finishPending(slot: Slot<V>): void {
    slot.pending = false;
    if (this.pending.get(slot.key) === slot) this.pending.delete(slot.key);
  }

  /**
   * Evicts cached entries no request uses, least recently used first, until `bytes` more fit;
   * false (evicting nothing) when they cannot fit even then, or caching is off.
   */
  private makeRoom(bytes: number): boolean {
    const { maxBytes } = this.options;
    if (this.closed || maxBytes === 0 || bytes > maxBytes) return false;
    if (this.held + bytes <= maxBytes) return true;
    let evictable = 0;
    for (const slot of this.slots.values()) if (slot.users === 0) evictable += slot.charged;
    if (this.held - evictable + bytes > maxBytes) return false;
    for (const slot of [...this.slots.values()]) {
      if (this.held + bytes <= maxBytes) break;
      if (slot.users > 0) continue;
      this.drop(slot);
      this.counters.evictions += 1;
    }
    return true;
  }

  private charge(slot: Slot<V>, bytes: number): void {
    this.held += bytes - slot.charged;
    slot.charged = bytes;
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
        this.settle(slot);
      },
    };
  }

  /** Frees a computed value once it is neither cached nor leased, and uncharges it. */
  private settle(slot: Slot<V>): void {
    if (slot.cached || slot.users > 0 || slot.value === undefined) return;
    slot.value.release();
    slot.value = undefined;
    this.charge(slot, 0);
    this.live.delete(slot);
  }

  private touch(slot: Slot<V>): void {
    slot.lastUsed = this.now();
    this.slots.delete(slot.key);
    this.slots.set(slot.key, slot);
  }

  /** Removes a cached entry; its bytes stay charged (as leased) until its last lease ends. */
  private drop(slot: Slot<V>): void {
    this.slots.delete(slot.key);
    slot.cached = false;
    this.settle(slot);
  }

  private expire(): void {
    const cutoff = this.now() - this.options.ttlMs;
    for (const slot of [...this.slots.values()]) {
      // Expiry order: the first entry that is fresh enough ends the scan.
      if (slot.lastUsed > cutoff) break;
      this.drop(slot);
      this.counters.expirations += 1;
    }
  }

  /** Arms one timer for the entry that expires first (none when the cache is empty). */
  private schedule(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const first = this.slots.values().next();
    if (this.closed || first.done === true) return;
    const due = first.value.lastUsed + this.options.ttlMs - this.now();
    // +1: the entry is expired once strictly older than the TTL.
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, due) + 1);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.expire();
      this.schedule();
    }, delay);
    this.timer.unref();
  }
}
