/**
 * Admission control through the API (tiny bundle, real sockets): a full queue answers 429
 * `overloaded` at once with Retry-After, queued work of clients that hung up is never computed
 * (the engine's executor task count), per-request costs are refused before decoding, and the
 * metrics listener reports all of it.
 *
 * The one place of the image model is held by the test through the server's own admission
 * (EngineState.admitImageRequest), so which requests run, wait or are refused does not
 * depend on how fast the model is.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { planQueries, type PromptInput } from '../../src/engine/prompt-plan';
import { syntheticPngBase64 } from '../helpers/images';
import { expectRawApiError, RawConnection } from '../helpers/raw-http';
import {
  expectApiError,
  exportTinyBundle,
  postJson,
  sample,
  scrape,
  startTestServer,
  waitFor,
  type TestServer,
} from '../helpers/server';

const SEGMENT = '/api/v1/image/segment';
const TEXT: PromptInput[] = [{ type: 'text', text: 'object' }];

/** Holds the model's only place until release() (what a long request would do). */
function holdThePlace(server: TestServer): { release: () => void; done: Promise<void> } {
  let release = (): void => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  const done = server.engineState.admitImageRequest(new AbortController().signal, () => held);
  return { release, done };
}

function tasksRun(server: TestServer): number {
  return server.engineState.segmenter?.stats().tasksRun ?? -1;
}

describe('admission control (tiny bundle)', () => {
  let server: TestServer;
  const images: string[] = [];

  before(async () => {
    server = await startTestServer({
      bundleDir: await exportTinyBundle(),
      env: { RATE_LIMIT_ENABLED: 'false', MAX_CONCURRENT_REQUESTS: '1', MAX_QUEUED_REQUESTS: '2' },
      metrics: true,
    });
    for (let seed = 0; seed < 8; seed += 1) images.push(await syntheticPngBase64(64, 48, seed));
  });

  after(async () => {
    await server?.close();
  });

  it('answers 429 overloaded at once beyond the queue, and serves the admitted ones', async () => {
    const held = holdThePlace(server);
    const queued = [0, 1].map((i) =>
      postJson(`${server.url}${SEGMENT}`, { image: images[i], prompts: TEXT }),
    );
    await waitFor(async () => server.engineState.admission().queued === 2, 10_000, 'two queued');
    for (const i of [2, 3, 4]) {
      const response = await postJson(`${server.url}${SEGMENT}`, {
        image: images[i],
        prompts: TEXT,
      });
      const retryAfter = Number(response.headers.get('retry-after'));
      assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${retryAfter}`);
      await expectApiError(response, 429, 'overloaded', /MAX_CONCURRENT_REQUESTS/);
    }
    assert.equal(server.engineState.admission().queued, 2, 'refusals did not queue');
    // Refused on its headers: a 10 MB body of which nothing was sent gets its 429 at once.
    const raw = await RawConnection.open(server.url);
    raw.write(
      `POST ${SEGMENT} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n` +
        'Content-Length: 10000000\r\n\r\n',
    );
    const [early] = await raw.nextResponses(1);
    expectRawApiError(early, 429, 'overloaded');
    assert.equal(early.headers.connection, 'close', 'the unread body is not taken for a request');
    raw.destroy();
    held.release();
    await held.done;
    for (const response of await Promise.all(queued)) assert.equal(response.status, 200);

    const metrics = await scrape(server);
    assert.equal(sample(metrics, 'sam3_http_429_total{reason="overloaded"}'), 4);
    const device = server.engineState.device;
    assert.equal(sample(metrics, `sam3_admission_total{device="${device}",outcome="rejected"}`), 4);
    assert.equal(sample(metrics, `sam3_admission_queued{device="${device}"}`), 0);
    assert.equal(
      sample(
        metrics,
        'sam3_http_requests_total{route="/api/v1/image/segment",method="POST",status="200"}',
      ),
      2,
    );
    assert.equal(
      sample(
        metrics,
        'sam3_http_requests_total{route="/api/v1/image/segment",method="POST",status="429"}',
      ),
      4,
    );
    // Each 200 carried its stages in Server-Timing: decode and detect were observed twice.
    assert.equal(sample(metrics, 'sam3_inference_stage_duration_seconds_count{stage="decode"}'), 2);
    assert.equal(sample(metrics, 'sam3_inference_stage_duration_seconds_count{stage="detect"}'), 2);
    assert.equal(sample(metrics, 'sam3_video_sessions_active'), 0);
    // On a CPU-only machine the allocator gauge is declared and has no samples.
    assert.ok(metrics.includes('# TYPE sam3_device_memory_bytes gauge'));
    if (device === 'cpu') assert.doesNotMatch(metrics, /^sam3_device_memory_bytes\{/m);
    assert.ok(sample(metrics, 'sam3_feature_cache_misses_total') >= 2, 'cache misses counted');
    assert.ok(sample(metrics, 'process_resident_memory_bytes') > 0, 'process metrics');
  });

  it('never computes the queued work of clients that hung up', async () => {
    // What one request on a fresh image costs the executor.
    let before = tasksRun(server);
    const first = await postJson(`${server.url}${SEGMENT}`, { image: images[5], prompts: TEXT });
    assert.equal(first.status, 200);
    const perRequest = tasksRun(server) - before;
    assert.ok(perRequest >= 2, `a request runs model tasks (${perRequest})`);

    const held = holdThePlace(server);
    const cancelled = server.engineState.admission().cancelled;
    const clients = [6, 7].map(() => new AbortController());
    const hungUp = clients.map((client, i) =>
      fetch(`${server.url}${SEGMENT}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ image: images[6 + i], prompts: TEXT }),
        signal: client.signal,
      }).catch((error: unknown) => error),
    );
    await waitFor(async () => server.engineState.admission().queued === 2, 10_000, 'two queued');
    for (const client of clients) client.abort();
    await Promise.all(hungUp);
    await waitFor(
      async () => server.engineState.admission().cancelled === cancelled + 2,
      10_000,
      'both dropped from the queue',
    );
    before = tasksRun(server);
    held.release();
    await held.done;
    // The next request runs at once and costs exactly one request's tasks: nothing of the two.
    const next = await postJson(`${server.url}${SEGMENT}`, { image: images[4], prompts: TEXT });
    assert.equal(next.status, 200);
    assert.equal(tasksRun(server) - before, perRequest);
    const metrics = await scrape(server);
    const device = server.engineState.device;
    assert.equal(
      sample(metrics, `sam3_admission_total{device="${device}",outcome="cancelled"}`),
      cancelled + 2,
    );
  });

  it('stops a request at its next stage once its client is gone', async () => {
    const segmenter = server.engineState.segmenter;
    assert.ok(segmenter !== null);
    const pixels = await sharp(Buffer.from(images[3], 'base64'))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const image = { data: pixels.data, width: pixels.info.width, height: pixels.info.height };
    const before = tasksRun(server);
    const gone = new AbortController();
    const running = segmenter.segment({
      image,
      signal: gone.signal,
      queries: planQueries(TEXT),
      confidenceThreshold: 0.5,
    });
    gone.abort(); // while the image is hashed: no model stage starts
    await assert.rejects(running, { name: 'RequestCancelledError' });
    assert.equal(tasksRun(server), before);
  });

  it('refuses per-request costs the model cannot take before decoding the image', async () => {
    const before = tasksRun(server);
    const clicks = Array.from({ length: 64 }, (_, i) => [(i % 8) / 8, Math.floor(i / 8) / 8]);
    const labels = clicks.map(() => 1);
    const message = await expectApiError(
      await postJson(`${server.url}${SEGMENT}`, {
        // Not an image at all: a refusal after decoding would be invalid_image.
        image: Buffer.from('not an image').toString('base64'),
        prompts: [
          { type: 'point', points: clicks, point_labels: labels },
          { type: 'point', points: clicks, point_labels: labels },
        ],
      }),
      400,
      'invalid_prompt',
    );
    assert.equal(
      message,
      "/prompts: the point prompts of a request are one object's clicks, at most 64 " +
        'together (got 128)',
    );
    const thin = await sharp({
      create: { width: 20_000, height: 2, channels: 3, background: '#808080' },
    })
      .png()
      .toBuffer();
    const side = await expectApiError(
      await postJson(`${server.url}${SEGMENT}`, { image: thin.toString('base64'), prompts: TEXT }),
      413,
      'image_too_large',
    );
    assert.equal(side, 'image is 20000x2; each side must be at most 16384 pixels');
    assert.equal(tasksRun(server), before, 'no model task ran');
  });

  it('counts the answers the HTTP server gives outside the app', async () => {
    const raw = await RawConnection.open(server.url);
    raw.write('NOT A REQUEST\r\n\r\n');
    const [answer] = await raw.nextResponses(1);
    expectRawApiError(answer, 400, 'invalid_request');
    raw.destroy();
    const metrics = await scrape(server);
    assert.equal(
      sample(metrics, 'sam3_http_requests_total{route="outside_app",method="none",status="400"}'),
      1,
    );
  });

  it('serves nothing but GET /metrics on the metrics listener', async () => {
    const other = await fetch(`${server.metricsUrl}/api/v1/image/segment`);
    assert.equal(other.status, 404);
    await other.text();
    const post = await fetch(`${server.metricsUrl}/metrics`, { method: 'POST' });
    assert.equal(post.status, 404);
    await post.text();
  });
});
