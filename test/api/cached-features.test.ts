/**
 * The feature cache through HTTP with the real engine: /cached-features equals separate
 * /segment calls, repeated images skip the vision encoder (counted), a request computes only
 * the neck it needs from the cached trunk output, TTL expiry, LRU eviction
 * under a small MAX_CACHE_SIZE_MB with native memory released at once, single flight for
 * concurrent identical requests, and ENABLE_FEATURE_CACHE=false.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { readBundleManifest } from '../../src/engine/bundle-manifest';
import { expectedFeatureSizes } from '../../src/engine/segmenter';
import { loadAddon } from '../../src/native/addon';
import { syntheticPngBase64 } from '../helpers/images';
import { decodeRle, maskIou } from '../helpers/rle';
import { exportTinyBundle, postJson, startTestServer, type TestServer } from '../helpers/server';

const SEGMENT = '/api/v1/image/segment';
const CACHED = '/api/v1/image/cached-features';
const TEXTS = ['person', 'a red car', 'tree', 'person'];

interface Instances {
  masks: { size: [number, number]; counts: string }[];
  boxes: number[][];
  scores: number[];
}
interface CachedResponse {
  results: (Instances & { prompt: string; num_masks: number })[];
  cache_hit: boolean;
  inference_time_ms: number;
}

async function post<T>(server: TestServer, path: string, body: unknown): Promise<T> {
  const response = await postJson(`${server.url}${path}`, body);
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text) as T;
}

function encodes(server: TestServer): number {
  const segmenter = server.engineState.segmenter;
  assert.ok(segmenter);
  return segmenter.stats().imageEncodes;
}

/** Bytes a server's feature cache holds. */
function cachedBytes(server: TestServer): number {
  return server.engineState.segmenter?.stats().cache.bytes ?? 0;
}

async function withServer(
  env: Record<string, string>,
  body: (server: TestServer) => Promise<void>,
): Promise<void> {
  const server = await startTestServer({
    bundleDir: await exportTinyBundle(),
    env: { RATE_LIMIT_ENABLED: 'false', ...env },
  });
  try {
    await body(server);
  } finally {
    await server.close();
  }
}

describe('POST /api/v1/image/cached-features and the feature cache', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: { RATE_LIMIT_ENABLED: 'false' },
    });
  });
  after(async () => {
    await server?.close();
  });

  it('gives each prompt the instances a separate /segment call gives', async () => {
    const image = await syntheticPngBase64(80, 60, 1);
    const cached = await post<CachedResponse>(server, CACHED, {
      image,
      text_prompts: TEXTS,
      confidence_threshold: 0,
    });
    assert.deepEqual(
      cached.results.map((r) => r.prompt),
      TEXTS,
    );
    for (const [index, text] of TEXTS.entries()) {
      const single = await post<Instances>(server, SEGMENT, {
        image,
        prompts: [{ type: 'text', text }],
        confidence_threshold: 0,
      });
      const batched = cached.results[index];
      assert.equal(batched.num_masks, single.scores.length);
      assert.ok(batched.num_masks > 0);
      batched.scores.forEach((score, i) => {
        assert.ok(Math.abs(score - single.scores[i]) <= 1e-5, `${text} #${i} score`);
        batched.boxes[i].forEach((v, k) =>
          assert.ok(Math.abs(v - single.boxes[i][k]) <= 1e-5, `${text} #${i} box`),
        );
        const iou = maskIou(decodeRle(batched.masks[i]), decodeRle(single.masks[i]));
        assert.ok(iou >= 0.999, `${text} #${i} mask IoU ${iou}`);
      });
    }
  });

  it('reports cache_hit on a repeated image and skips the vision encoder, across endpoints', async () => {
    const image = await syntheticPngBase64(64, 48, 2);
    const before = encodes(server);
    const first = await post<CachedResponse>(server, CACHED, { image, text_prompts: ['cat'] });
    assert.equal(first.cache_hit, false);
    assert.equal(encodes(server), before + 1);
    const second = await post<CachedResponse>(server, CACHED, { image, text_prompts: ['dog'] });
    assert.equal(second.cache_hit, true);
    await post(server, SEGMENT, { image, prompts: [{ type: 'text', text: 'cat' }] });
    assert.equal(encodes(server), before + 1, 'no encoder run for the cached image');
  });

  it('runs only the neck a request needs, from the cached trunk output', async () => {
    const sizes = expectedFeatureSizes(await readBundleManifest(await exportTinyBundle()));
    const image = await syntheticPngBase64(72, 40, 9);
    const click = { image, prompts: [{ type: 'point', points: [[0.3, 0.6]], point_labels: [1] }] };
    const before = encodes(server);
    let bytes = cachedBytes(server);
    // A click: the trunk output and the tracker's maps, no detector maps.
    await post(server, SEGMENT, click);
    assert.equal(encodes(server), before + 1);
    assert.equal(cachedBytes(server) - bytes, sizes.trunk + sizes.tracker);
    bytes = cachedBytes(server);
    // A text prompt on the same image: the detector's neck on the cached trunk output.
    const prompt = 'a text no other test asks for';
    const text = await post<CachedResponse>(server, CACHED, { image, text_prompts: [prompt] });
    assert.equal(text.cache_hit, false, 'its detector maps were computed');
    assert.equal(encodes(server), before + 1, 'no second trunk run');
    assert.equal(cachedBytes(server) - bytes, sizes.detector + sizes.text);
    // Both at once: every map is cached now.
    const both = await post<Instances>(server, SEGMENT, {
      image,
      prompts: [...click.prompts, { type: 'text', text: prompt }],
      confidence_threshold: 0,
    });
    assert.ok(both.scores.length > 1);
    assert.equal(encodes(server), before + 1);
    assert.equal(cachedBytes(server) - bytes, sizes.detector + sizes.text);
  });

  it('encodes a new image once for concurrent identical requests', async () => {
    const image = await syntheticPngBase64(64, 48, 3);
    const before = encodes(server);
    const responses = await Promise.all(
      Array.from({ length: 4 }, () =>
        post<CachedResponse>(server, CACHED, { image, text_prompts: ['cat', 'dog'] }),
      ),
    );
    assert.equal(encodes(server), before + 1);
    assert.equal(responses.filter((r) => !r.cache_hit).length, 1);
    const scores = JSON.stringify(responses[0].results);
    assert.ok(responses.every((r) => JSON.stringify(r.results) === scores));
  });

  it('expires image features after FEATURE_CACHE_TTL_SECONDS', async () => {
    await withServer({ FEATURE_CACHE_TTL_SECONDS: '0.3' }, async (ttlServer) => {
      const image = await syntheticPngBase64(64, 48, 4);
      const request = { image, text_prompts: ['cat'] };
      assert.equal((await post<CachedResponse>(ttlServer, CACHED, request)).cache_hit, false);
      assert.equal((await post<CachedResponse>(ttlServer, CACHED, request)).cache_hit, true);
      await sleep(450);
      assert.equal((await post<CachedResponse>(ttlServer, CACHED, request)).cache_hit, false);
      assert.equal(encodes(ttlServer), 2);
    });
  });

  it('evicts the least recently used image under MAX_CACHE_SIZE_MB and frees its memory', async () => {
    // The tiny bundle's image features are about 3.2 MB: 4 MB holds one image and its texts.
    await withServer({ MAX_CACHE_SIZE_MB: '4' }, async (small) => {
      const a = await syntheticPngBase64(64, 48, 5);
      const b = await syntheticPngBase64(64, 48, 6);
      const ask = (image: string) =>
        post<CachedResponse>(small, CACHED, { image, text_prompts: ['cat'] });
      assert.equal((await ask(a)).cache_hit, false);
      assert.equal((await ask(a)).cache_hit, true);
      assert.equal((await ask(b)).cache_hit, false); // evicts a
      assert.equal((await ask(a)).cache_hit, false);
      const stats = small.engineState.segmenter?.stats().cache;
      assert.ok(stats);
      assert.ok(stats.evictions >= 2, `evictions ${stats.evictions}`);
      assert.ok(stats.bytes <= 4 * 1024 * 1024);
      // Evicted features are released at once: native code holds exactly what the caches hold.
      assert.equal(loadAddon().runtimeInfo().liveEmbeddingBytes, stats.bytes + cachedBytes(server));
    });
  });

  it('computes features on every request with ENABLE_FEATURE_CACHE=false', async () => {
    await withServer({ ENABLE_FEATURE_CACHE: 'false' }, async (off) => {
      const image = await syntheticPngBase64(64, 48, 7);
      for (let i = 0; i < 2; i += 1) {
        const response = await post<CachedResponse>(off, CACHED, { image, text_prompts: ['cat'] });
        assert.equal(response.cache_hit, false);
      }
      assert.equal(encodes(off), 2);
      assert.equal(off.engineState.segmenter?.stats().cache.entries, 0);
      assert.equal(loadAddon().runtimeInfo().liveEmbeddingBytes, cachedBytes(server));
    });
  });
});
