/**
 * FeatureCache: one byte budget over in-flight, cached and leased features, LRU by exact
 * bytes, idle expiry on a timer, single flight, leases that keep evicted values alive (and
 * counted) until their last user is done, clear() over computations in flight, and batched
 * computation of missing keys.
 * The cached values here are plain objects with a byte size and a release(): the cache's
 * whole contract with the native embeddings (tested with the real engine in the API tests).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { FeatureCache, type CacheStats, type CachedValue } from '../../src/engine/feature-cache';

class Feature implements CachedValue {
  released = 0;
  releasedAt: number | undefined;
  constructor(
    readonly name: string,
    readonly byteSize: number,
  ) {}
  release(): void {
    this.released += 1;
    this.releasedAt = performance.now();
  }
}

/** A computation that finishes when the test says so. */
function deferred(): { compute: () => Promise<Feature>; finish: (f: Feature) => void } {
  let finish: (f: Feature) => void = () => assert.fail('compute was not called');
  const compute = () => new Promise<Feature>((resolve) => (finish = resolve));
  return { compute, finish: (f) => finish(f) };
}

/** The byte figures of stats(), for exact comparisons. */
function bytesOf(stats: CacheStats): Partial<CacheStats> {
  const { bytes, inFlightBytes, leasedBytes, heldBytes, uncountedBytes, entries, inFlight } = stats;
  return { bytes, inFlightBytes, leasedBytes, heldBytes, uncountedBytes, entries, inFlight };
}

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

describe('FeatureCache', () => {
  it('computes once, then serves hits', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 1000 });
    let computed = 0;
    const make = async () => new Feature(`a${++computed}`, 10);
    const first = await cache.acquire('a', make);
    const second = await cache.acquire('a', make);
    assert.equal(first.hit, false);
    assert.equal(second.hit, true);
    assert.equal(second.value, first.value);
    assert.equal(computed, 1);
    assert.deepEqual(cache.stats(), {
      hits: 1,
      misses: 1,
      evictions: 0,
      expirations: 0,
      uncached: 0,
      entries: 1,
      inFlight: 0,
      bytes: 10,
      inFlightBytes: 0,
      leasedBytes: 0,
      heldBytes: 10,
      uncountedBytes: 0,
      maxBytes: 100,
    });
  });

  it('evicts least recently used entries to stay within the byte budget, releasing them', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 25, ttlMs: 1000 });
    const a = new Feature('a', 10);
    const b = new Feature('b', 10);
    const c = new Feature('c', 10);
    (await cache.acquire('a', async () => a)).release();
    (await cache.acquire('b', async () => b)).release();
    (await cache.acquire('a', async () => new Feature('x', 10))).release(); // a is now newest
    (await cache.acquire('c', async () => c)).release(); // 30 > 25: b (least recent) leaves
    assert.equal(b.released, 1);
    assert.equal(a.released, 0);
    assert.equal(c.released, 0);
    assert.equal(cache.stats().bytes, 20);
    assert.equal(cache.stats().evictions, 1);
    const again = await cache.acquire('b', async () => new Feature('b2', 10));
    assert.equal(again.hit, false);
  });

  it('never caches a value larger than the budget, and frees it after use', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 5, ttlMs: 1000 });
    const big = new Feature('big', 10);
    const lease = await cache.acquire('big', async () => big);
    assert.equal(big.released, 0, 'still in use');
    lease.release();
    assert.equal(big.released, 1);
    assert.equal(cache.stats().entries, 0);
  });

  it('is off with a zero budget: every lookup computes', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 0, ttlMs: 1000 });
    let computed = 0;
    for (let i = 0; i < 3; i += 1) {
      (await cache.acquire('a', async () => new Feature(`a${++computed}`, 1))).release();
    }
    assert.equal(computed, 3);
  });

  it('expires entries idle for longer than the TTL', async () => {
    const time = clock();
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 500, now: time.now });
    const a = new Feature('a', 10);
    (await cache.acquire('a', async () => a)).release();
    time.advance(400);
    const hit = await cache.acquire('a', async () => new Feature('a2', 10));
    assert.equal(hit.hit, true);
    hit.release();
    time.advance(400); // 400 ms since the last use: still fresh
    const stillThere = await cache.acquire('a', async () => new Feature('a3', 10));
    assert.equal(stillThere.hit, true);
    stillThere.release();
    time.advance(501);
    const recomputed = await cache.acquire('a', async () => new Feature('a4', 10));
    assert.equal(recomputed.hit, false);
    assert.equal(recomputed.value.name, 'a4');
    assert.equal(a.released, 1);
    assert.equal(cache.stats().expirations, 1);
  });

  it('shares one computation between concurrent requests for the same key', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 1000 });
    let computed = 0;
    let finish: (f: Feature) => void = () => undefined;
    const make = () => {
      computed += 1;
      return new Promise<Feature>((resolve) => (finish = resolve));
    };
    const pending = [cache.acquire('a', make), cache.acquire('a', make), cache.acquire('a', make)];
    finish(new Feature('a', 10));
    const leases = await Promise.all(pending);
    assert.equal(computed, 1);
    assert.deepEqual(
      leases.map((l) => l.hit),
      [false, true, true],
    );
    assert.ok(leases.every((l) => l.value === leases[0].value));
  });

  it('keeps a cleared value alive, and counted as leased, until its last lease ends', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 10, ttlMs: 1000 });
    const a = new Feature('a', 10);
    const inUse = await cache.acquire('a', async () => a);
    cache.clear();
    assert.equal(a.released, 0, 'a request still uses it');
    assert.deepEqual(bytesOf(cache.stats()), {
      bytes: 0,
      inFlightBytes: 0,
      leasedBytes: 10,
      heldBytes: 10,
      uncountedBytes: 0,
      entries: 0,
      inFlight: 0,
    });
    // The leased bytes still fill the budget: a new value cannot be cached beside them.
    (await cache.acquire('b', async () => new Feature('b', 10))).release();
    assert.equal(cache.stats().entries, 0);
    assert.equal(cache.stats().uncached, 1);
    inUse.release();
    inUse.release(); // idempotent
    assert.equal(a.released, 1);
    assert.equal(cache.stats().heldBytes, 0);
    (await cache.acquire('c', async () => new Feature('c', 10))).release();
    assert.equal(cache.stats().entries, 1, 'room again once the lease ended');
  });

  it('counts a computation in flight at its expected size, then at its real size', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 1000 });
    const { compute, finish } = deferred();
    const pending = cache.acquire('a', compute, 12);
    assert.deepEqual(bytesOf(cache.stats()), {
      bytes: 0,
      inFlightBytes: 12,
      leasedBytes: 0,
      heldBytes: 12,
      uncountedBytes: 0,
      entries: 0,
      inFlight: 1,
    });
    finish(new Feature('a', 10));
    const lease = await pending;
    assert.deepEqual(bytesOf(cache.stats()), {
      bytes: 10,
      inFlightBytes: 0,
      leasedBytes: 0,
      heldBytes: 10,
      uncountedBytes: 0,
      entries: 1,
      inFlight: 0,
    });
    lease.release();
    assert.equal(cache.stats().bytes, 10, 'cached after its lease ends');
  });

  it('makes room by evicting only entries no request uses; else computes without caching', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 20, ttlMs: 1000 });
    const a = new Feature('a', 10);
    const b = new Feature('b', 10);
    const inUse = await cache.acquire('a', async () => a, 10);
    (await cache.acquire('b', async () => b, 10)).release();
    const c = await cache.acquire('c', async () => new Feature('c', 10), 10);
    assert.deepEqual([a.released, b.released], [0, 1], 'b (unused) evicted, a (leased) kept');
    assert.equal(cache.stats().evictions, 1);
    // a and c are both leased: nothing can be evicted, so d is computed but not cached.
    const d = new Feature('d', 10);
    const { compute, finish } = deferred();
    const pending = cache.acquire('d', compute, 10);
    assert.deepEqual(bytesOf(cache.stats()), {
      bytes: 20,
      inFlightBytes: 0,
      leasedBytes: 0,
      heldBytes: 20,
      uncountedBytes: 10,
      entries: 2,
      inFlight: 1,
    });
    finish(d);
    const dLease = await pending;
    assert.equal(dLease.value, d, 'the request still gets its features');
    assert.equal(cache.stats().uncached, 1);
    dLease.release();
    assert.equal(d.released, 1, 'freed after its only request');
    assert.deepEqual(
      [cache.stats().entries, cache.stats().heldBytes, cache.stats().uncountedBytes],
      [2, 20, 0],
    );
    inUse.release();
    c.release();
  });

  it('never holds more than the budget for the cache in a burst of distinct keys', async () => {
    // Bound: in flight + cached + leased <= maxBytes at every step (sizes known in advance);
    // the rest of the burst is computed outside the cache and freed after its request.
    const maxBytes = 30;
    const cache = new FeatureCache<Feature>({ maxBytes, ttlMs: 60_000 });
    const features: Feature[] = [];
    const finishers: ((f: Feature) => void)[] = [];
    const check = (): void => {
      const stats = cache.stats();
      assert.ok(stats.heldBytes <= maxBytes, `held ${stats.heldBytes}`);
      assert.equal(stats.heldBytes, stats.bytes + stats.inFlightBytes + stats.leasedBytes);
      const alive = features.filter((f) => f.released === 0).length * 10;
      assert.ok(alive <= stats.heldBytes + stats.uncountedBytes, `alive ${alive}`);
    };
    const requests = Array.from({ length: 20 }, (_, i) => {
      const { compute, finish } = deferred();
      finishers.push(finish);
      const lease = cache.acquire(`k${i}`, compute, 10);
      check();
      return lease;
    });
    assert.deepEqual(bytesOf(cache.stats()), {
      bytes: 0,
      inFlightBytes: 30,
      leasedBytes: 0,
      heldBytes: 30,
      uncountedBytes: 170,
      entries: 0,
      inFlight: 20,
    });
    // Finish in a scrambled order, releasing every other lease as soon as it arrives.
    const order = Array.from({ length: 20 }, (_, i) => (i * 7) % 20);
    const leases = [];
    for (const i of order) {
      const feature = new Feature(`k${i}`, 10);
      features.push(feature);
      finishers[i](feature);
      const lease = await requests[i];
      assert.equal(lease.value, feature);
      check();
      if (i % 2 === 0) lease.release();
      else leases.push(lease);
      check();
    }
    for (const lease of leases) lease.release();
    check();
    const stats = cache.stats();
    assert.deepEqual([stats.entries, stats.heldBytes, stats.uncountedBytes], [3, 30, 0]);
    // A result that arrives when an unused cached entry can make room replaces it (LRU): k7
    // replaces k0 and k9 replaces k2; the other 15 results of the burst were not cached.
    assert.deepEqual([stats.uncached, stats.evictions], [15, 2]);
    assert.equal(features.filter((f) => f.released === 0).length, 3, 'only cached ones live');
  });

  it('clear() during a computation caches nothing: the result goes to its waiters only', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 60_000 });
    const { compute, finish } = deferred();
    const first = cache.acquire('a', compute, 10);
    const joined = cache.acquire('a', async () => assert.fail('joins the computation'), 10);
    cache.clear();
    // A request after clear() does not join the computation it discarded.
    let recomputed = 0;
    const after = cache.acquire('a', async () => new Feature(`a${++recomputed}`, 10), 10);
    const a = new Feature('a', 10);
    finish(a);
    const [lease, joinedLease, afterLease] = await Promise.all([first, joined, after]);
    assert.equal(lease.value, a);
    assert.equal(joinedLease.value, a);
    assert.equal(afterLease.value.name, 'a1');
    assert.equal(cache.stats().entries, 1, 'only the value computed after clear()');
    lease.release();
    joinedLease.release();
    assert.equal(a.released, 1, 'dropped after its last waiter');
    afterLease.release();
    const again = await cache.acquire('a', async () => new Feature('a2', 10), 10);
    assert.deepEqual([again.hit, again.value.name], [true, 'a1']);
    again.release();
  });

  it('expires entries on a timer, without waiting for a lookup', async () => {
    const ttlMs = 60;
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs });
    const a = new Feature('a', 10);
    const b = new Feature('b', 10);
    (await cache.acquire('a', async () => a)).release();
    const aUsed = performance.now();
    await sleep(30);
    (await cache.acquire('b', async () => b)).release();
    const bUsed = performance.now();
    // No lookup from here on: only the timer can free them.
    const deadline = performance.now() + 2_000;
    while ((a.released === 0 || b.released === 0) && performance.now() < deadline) await sleep(5);
    assert.deepEqual([a.released, b.released], [1, 1]);
    assert.ok((a.releasedAt as number) - aUsed >= ttlMs - 1, 'a lived its TTL');
    assert.ok((b.releasedAt as number) - bUsed >= ttlMs - 1, 'b lived its TTL');
    assert.deepEqual(
      [cache.stats().entries, cache.stats().expirations, cache.stats().heldBytes],
      [0, 2, 0],
    );
  });

  it('close() frees the cache, stops expiry and caches nothing more', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 60_000 });
    const a = new Feature('a', 10);
    (await cache.acquire('a', async () => a)).release();
    cache.close();
    assert.equal(a.released, 1);
    const b = new Feature('b', 10);
    (await cache.acquire('b', async () => b)).release();
    assert.equal(b.released, 1);
    assert.deepEqual([cache.stats().entries, cache.stats().heldBytes], [0, 0]);
  });

  it('computes the missing keys of a batch in one call, in order, and counts repeats', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 1000 });
    (await cache.acquire('b', async () => new Feature('b', 1))).release();
    const calls: string[][] = [];
    const leases = await cache.acquireMany(['a', 'b', 'c', 'a'], async (missing) => {
      calls.push(missing);
      return missing.map((key) => new Feature(key, 1));
    });
    assert.deepEqual(calls, [['a', 'c']]);
    assert.deepEqual(
      leases.map((l) => [l.value.name, l.hit]),
      [
        ['a', false],
        ['b', true],
        ['c', false],
        ['a', false],
      ],
    );
  });

  it('passes a failed computation to every waiter and caches nothing', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 1000 });
    const failing = async (): Promise<Feature> => {
      throw new Error('encoder failed');
    };
    const results = await Promise.allSettled([
      cache.acquire('a', failing),
      cache.acquire('a', failing),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'rejected'],
    );
    assert.equal(cache.stats().entries, 0);
    const later = await cache.acquire('a', async () => new Feature('a', 1));
    assert.equal(later.hit, false);
  });

  it('aborts a computation once every waiter gave up, and computes the key anew after', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 1000 });
    const signals: AbortSignal[] = [];
    const finishers: ((f: Feature) => void)[] = [];
    const compute = (signal: AbortSignal): Promise<Feature> => {
      signals.push(signal);
      return new Promise<Feature>((resolve) => finishers.push(resolve));
    };
    const [one, two] = [new AbortController(), new AbortController()];
    const first = cache.acquire('a', compute, 10, { signal: one.signal });
    const second = cache.acquire('a', compute, 10, { signal: two.signal });
    assert.equal(signals.length, 1, 'one shared computation');
    one.abort();
    await assert.rejects(first, { name: 'RequestCancelledError' });
    assert.equal(signals[0].aborted, false, 'another waiter still wants it');
    two.abort();
    await assert.rejects(second, { name: 'RequestCancelledError' });
    assert.equal(signals[0].aborted, true);
    assert.deepEqual(bytesOf(cache.stats()), {
      bytes: 0,
      inFlightBytes: 10,
      leasedBytes: 0,
      heldBytes: 10,
      uncountedBytes: 0,
      entries: 0,
      inFlight: 0,
    });
    // A later request does not join the abandoned computation: it starts its own.
    const third = cache.acquire('a', compute, 10);
    assert.equal(signals.length, 2);
    finishers[1](new Feature('a2', 10));
    const lease = await third;
    assert.equal(lease.value.name, 'a2');
    lease.release();
    // The abandoned one still finishing (its model call had started) is freed, not cached.
    const late = new Feature('a1', 10);
    finishers[0](late);
    await sleep(0);
    assert.equal(late.released, 1);
    assert.equal((await cache.acquire('a', compute)).value.name, 'a2');
    assert.equal(cache.stats().heldBytes, 10);
  });

  it('never aborts a computation a waiter without a signal still wants', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 1000 });
    const { compute, finish } = deferred();
    let signal: AbortSignal | undefined;
    const leaving = new AbortController();
    const gone = cache.acquire(
      'a',
      (s) => {
        signal = s;
        return compute();
      },
      0,
      { signal: leaving.signal },
    );
    const staying = cache.acquire('a', compute);
    leaving.abort();
    await assert.rejects(gone, { name: 'RequestCancelledError' });
    assert.equal(signal?.aborted, false);
    finish(new Feature('a', 5));
    assert.equal((await staying).value.name, 'a');
    assert.equal(cache.stats().entries, 1);
  });

  it('refuses at once a request whose signal already aborted', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 100, ttlMs: 1000 });
    let computed = 0;
    await assert.rejects(
      cache.acquire('a', async () => new Feature(`a${++computed}`, 1), 0, {
        signal: AbortSignal.abort(),
      }),
      { name: 'RequestCancelledError' },
    );
    assert.equal(computed, 0);
    assert.equal(cache.stats().misses, 0);
  });
});
