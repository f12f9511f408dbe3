/**
 * FeatureCache: LRU by exact bytes, idle expiry, single flight, leases that keep evicted
 * values alive until their last user is done, and batched computation of missing keys.
 * The cached values here are plain objects with a byte size and a release(): the cache's
 * whole contract with the native embeddings (tested with the real engine in the API tests).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FeatureCache, type CachedValue } from '../../src/engine/feature-cache';

class Feature implements CachedValue {
  released = 0;
  constructor(
    readonly name: string,
    readonly byteSize: number,
  ) {}
  release(): void {
    this.released += 1;
  }
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
      entries: 1,
      bytes: 10,
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

  it('keeps an evicted value alive until its last lease ends', async () => {
    const cache = new FeatureCache<Feature>({ maxBytes: 10, ttlMs: 1000 });
    const a = new Feature('a', 10);
    const inUse = await cache.acquire('a', async () => a);
    (await cache.acquire('b', async () => new Feature('b', 10))).release(); // evicts a
    assert.equal(cache.stats().bytes, 10);
    assert.equal(a.released, 0, 'a request still uses it');
    inUse.release();
    inUse.release(); // idempotent
    assert.equal(a.released, 1);
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
});
