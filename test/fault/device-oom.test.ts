/**
 * A device out of memory (SECURITY.md, "Load and faults"), forced with the engine's fault
 * injection: the request answers 503 `device_out_of_memory` with Retry-After, its admission
 * place and feature-cache reservation are given back, and the next request succeeds.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { syntheticPngBase64 } from '../helpers/images';
import {
  expectApiError,
  exportTinyBundle,
  postJson,
  startTestServer,
  type TestServer,
} from '../helpers/server';

describe('device out of memory', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: { RATE_LIMIT_ENABLED: 'false', MAX_CONCURRENT_REQUESTS: '1', MAX_QUEUED_REQUESTS: '0' },
    });
  });

  after(async () => {
    await server?.close();
  });

  it('answers 503 device_out_of_memory, then serves the next request', async () => {
    const segmenter = server.engineState.segmenter;
    assert.ok(segmenter !== null);
    const body = {
      image: await syntheticPngBase64(64, 48, 3),
      prompts: [{ type: 'text', text: 'object' }],
    };
    const url = `${server.url}/api/v1/image/segment`;
    segmenter.injectDeviceOutOfMemory(1);
    const failed = await postJson(url, body);
    assert.equal(failed.headers.get('retry-after'), '5');
    await expectApiError(failed, 503, 'device_out_of_memory', /out of memory/);
    const cache = segmenter.stats().cache;
    assert.equal(cache.inFlightBytes, 0, 'the failed computation holds no reservation');
    assert.equal(cache.entries, 0, 'nothing was cached for it');
    assert.equal(server.engineState.admission().running, 0, 'its admission place is free');
    // MAX_QUEUED_REQUESTS=0 and one place: this is admitted only if the place was given back.
    const next = await postJson(url, body);
    assert.equal(next.status, 200);
    const answer = (await next.json()) as { image_size: { width: number; height: number } };
    assert.deepEqual(answer.image_size, { width: 64, height: 48 });
    assert.throws(
      () => segmenter.injectDeviceOutOfMemory(-1),
      /count must be a non-negative integer/,
    );
  });
});
