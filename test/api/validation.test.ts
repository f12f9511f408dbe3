/**
 * Request validation, body limits and error shapes of POST /api/v1/image/segment, proven on a
 * server whose model is still loading (validation answers before the engine is needed).
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { expectApiError, postJson, startTestServer, type TestServer } from '../helpers/server';

const SEGMENT = '/api/v1/image/segment';
/** A 1x1 PNG; never decoded here (the model is not ready), only validated. */
const TINY_PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function body(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { image: TINY_PNG, prompts: [{ type: 'text', text: 'person' }], ...overrides };
}

describe('POST /api/v1/image/segment validation (model loading)', () => {
  let server: TestServer;
  const logLines: Record<string, unknown>[] = [];

  before(async () => {
    const logStream = new PassThrough();
    logStream.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() !== '') logLines.push(JSON.parse(line) as Record<string, unknown>);
      }
    });
    server = await startTestServer({ logStream });
  });
  after(async () => {
    await server.close();
  });

  const post = (payload: unknown, headers?: Record<string, string>): Promise<Response> =>
    postJson(`${server.url}${SEGMENT}`, payload, headers);

  const schemaCases: [string, unknown, RegExp][] = [
    ['missing image', { prompts: [{ type: 'text', text: 'a' }] }, /\/image: is required/],
    ['missing prompts', { image: TINY_PNG }, /\/prompts: is required/],
    ['image of the wrong type', body({ image: 42 }), /\/image: must be string/],
    ['empty image', body({ image: '' }), /\/image: must NOT have fewer than 1 characters/],
    ['prompts not an array', body({ prompts: 'person' }), /\/prompts: must be array/],
    ['no prompts', body({ prompts: [] }), /\/prompts: must NOT have fewer than 1 items/],
    [
      'threshold above 1',
      body({ confidence_threshold: 1.5 }),
      /\/confidence_threshold: must be <= 1/,
    ],
    [
      'threshold below 0',
      body({ confidence_threshold: -0.1 }),
      /\/confidence_threshold: must be >= 0/,
    ],
    [
      'threshold as a string',
      body({ confidence_threshold: '0.5' }),
      /\/confidence_threshold: must be number/,
    ],
    [
      'null threshold',
      body({ confidence_threshold: null }),
      /\/confidence_threshold: must be number/,
    ],
    [
      'visualization flag not boolean',
      body({ return_visualization: 1 }),
      /\/return_visualization: must be boolean/,
    ],
    [
      'unknown top-level field',
      body({ extra: true }),
      /\/extra: unknown field "extra" is not allowed/,
    ],
    [
      'unknown prompt field',
      body({ prompts: [{ type: 'text', text: 'a', color: 'red' }] }),
      /\/prompts\/0\/color: unknown field "color"/,
    ],
    [
      'unknown prompt type',
      body({ prompts: [{ type: 'mask' }] }),
      /\/prompts\/0\/type: must be one of \["text","box","point"\]/,
    ],
    ['prompt without type', body({ prompts: [{ text: 'a' }] }), /\/prompts\/0\/type/],
    ['prompt not an object', body({ prompts: ['person'] }), /\/prompts\/0: must be object/],
    [
      'text of the wrong type',
      body({ prompts: [{ type: 'text', text: 5 }] }),
      /\/prompts\/0\/text: must be string/,
    ],
    ['empty text', body({ prompts: [{ type: 'text', text: '' }] }), /\/prompts\/0\/text/],
    [
      'whitespace-only text',
      body({ prompts: [{ type: 'text', text: ' \t ' }] }),
      /\/prompts\/0\/text: must match/,
    ],
    [
      'box coordinate out of range',
      body({ prompts: [{ type: 'box', box: [0.5, 0.5, 1.5, 0.1] }] }),
      /\/prompts\/0\/box\/2: must be <= 1/,
    ],
    [
      'box with three numbers',
      body({ prompts: [{ type: 'box', box: [0.5, 0.5, 0.1] }] }),
      /\/prompts\/0\/box: must NOT have fewer than 4 items/,
    ],
    [
      'box label not boolean',
      body({ prompts: [{ type: 'box', box: [0.5, 0.5, 0.1, 0.1], label: 1 }] }),
      /\/prompts\/0\/label: must be boolean/,
    ],
    [
      'point with three coordinates',
      body({ prompts: [{ type: 'point', points: [[0.1, 0.2, 0.3]], point_labels: [1] }] }),
      /\/prompts\/0\/points\/0: must NOT have more than 2 items/,
    ],
    [
      'point label not 0 or 1',
      body({ prompts: [{ type: 'point', points: [[0.1, 0.2]], point_labels: [2] }] }),
      /\/prompts\/0\/point_labels\/0: must be one of \[0,1\]/,
    ],
    [
      'negative point coordinate',
      body({ prompts: [{ type: 'point', points: [[-0.1, 0.2]], point_labels: [1] }] }),
      /\/prompts\/0\/points\/0\/0: must be >= 0/,
    ],
    ['a JSON array body', [body()], /\/: must be object/],
  ];

  for (const [name, payload, message] of schemaCases) {
    it(`rejects ${name} with 400 invalid_request naming the field`, async () => {
      await expectApiError(await post(payload), 400, 'invalid_request', message);
    });
  }

  it('rejects a __proto__ key as an unknown field and pollutes nothing', async () => {
    const raw = `{"image": "${TINY_PNG}", "prompts": [{"type": "text", "text": "a"}], "__proto__": {"admin": true}}`;
    await expectApiError(await post(raw), 400, 'invalid_request', /\/__proto__: unknown field/);
    const nested = `{"image": "${TINY_PNG}", "prompts": [{"type": "text", "text": "a", "__proto__": {"admin": true}}]}`;
    await expectApiError(await post(nested), 400, 'invalid_request', /\/prompts\/0\/__proto__/);
    const constructorKey = JSON.stringify(body({ constructor: { prototype: { admin: true } } }));
    await expectApiError(await post(constructorKey), 400, 'invalid_request', /\/constructor/);
    assert.equal(({} as Record<string, unknown>).admin, undefined);
  });

  it('rejects 10,000 prompts by the schema limit', async () => {
    const prompts = Array.from({ length: 10_000 }, () => ({ type: 'text', text: 'a' }));
    await expectApiError(
      await post(body({ prompts })),
      400,
      'invalid_request',
      /\/prompts: must NOT have more than 64 items/,
    );
  });

  it('rejects a 100 KB text quickly by its maxLength', async () => {
    const started = performance.now();
    const response = await post(body({ prompts: [{ type: 'text', text: 'a'.repeat(100_000) }] }));
    await expectApiError(
      response,
      400,
      'invalid_request',
      /\/prompts\/0\/text: must NOT have more than 1000 characters/,
    );
    assert.ok(performance.now() - started < 1000, 'answered within a second');
  });

  it('truncates an absurdly long unknown field name in the message', async () => {
    const name = 'x'.repeat(10_000);
    const message = await expectApiError(await post(body({ [name]: 1 })), 400, 'invalid_request');
    assert.ok(message.length < 300, `message of ${message.length} characters`);
  });

  it('states the box, point and coordinate limits in 400s naming the field', async () => {
    const box = { type: 'box', box: [0.5, 0.5, 0.2, 0.2] };
    await expectApiError(
      await post(body({ prompts: [{ type: 'text', text: 'a' }, ...new Array(33).fill(box)] })),
      400,
      'invalid_request',
      /\/prompts: must contain at least 0 and no more than 32 valid item/,
    );
    await expectApiError(
      await post(body({ prompts: [{ type: 'point', points: [[1.5, 0.2]], point_labels: [1] }] })),
      400,
      'invalid_request',
      /\/prompts\/0\/points\/0\/0: must be <= 1/,
    );
    await expectApiError(
      await post(
        '{"image": "aGVsbG8=", "prompts": [{"type": "box", "box": [0.5, 1e999, 0.1, 0.1]}]}',
      ),
      400,
      'invalid_request',
      /\/prompts\/0\/box\/1: must be number/,
    );
    await expectApiError(
      await post(body({ prompts: [{ type: 'point', points: [[0.2, 0.2]], point_labels: [2] }] })),
      400,
      'invalid_request',
      /\/prompts\/0\/point_labels\/0: must be one of \[0,1\]/,
    );
  });

  it('validates cached-features requests the same way', async () => {
    const url = `${server.url}/api/v1/image/cached-features`;
    const request = (extra: Record<string, unknown>) =>
      postJson(url, { image: 'aGVsbG8=', text_prompts: ['cat'], ...extra });
    await expectApiError(
      await request({ text_prompts: [] }),
      400,
      'invalid_request',
      /\/text_prompts: must NOT have fewer than 1 items/,
    );
    await expectApiError(
      await request({ text_prompts: new Array(129).fill('cat') }),
      400,
      'invalid_request',
      /\/text_prompts: must NOT have more than 128 items/,
    );
    await expectApiError(await request({ prompts: [] }), 400, 'invalid_request', /prompts/);
    await expectApiError(
      await request({ text_prompts: ['   '] }),
      400,
      'invalid_request',
      /\/text_prompts\/0/,
    );
    const ready = await request({});
    await expectApiError(ready, 503, 'not_ready', /loading/);
  });

  it('answers a valid request with 503 not_ready and Retry-After while the model loads', async () => {
    const response = await post(body({ confidence_threshold: 0.3, return_visualization: false }));
    assert.equal(response.headers.get('retry-after'), '5');
    await expectApiError(response, 503, 'not_ready', /loading/);
  });

  it('answers malformed JSON with 400 invalid_json', async () => {
    await expectApiError(await post('{"image": "abc", '), 400, 'invalid_json');
    await expectApiError(await post('"just a string"'), 400, 'invalid_json');
  });

  it('answers a body that is not JSON with 415 unsupported_media', async () => {
    const response = await fetch(`${server.url}${SEGMENT}`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: JSON.stringify(body()),
    });
    await expectApiError(response, 415, 'unsupported_media', /application\/json/);
  });

  it('answers unknown routes and methods with 404 not_found', async () => {
    await expectApiError(await fetch(`${server.url}/nope`), 404, 'not_found', /GET \/nope/);
    await expectApiError(await fetch(`${server.url}${SEGMENT}`), 404, 'not_found');
  });

  it('generates a UUID request id, or keeps a safe client-supplied one', async () => {
    const generated = await fetch(`${server.url}/health`);
    assert.match(generated.headers.get('x-request-id') ?? '', UUID);
    const kept = await fetch(`${server.url}/health`, {
      headers: { 'x-request-id': 'abc.DEF_1-2' },
    });
    assert.equal(kept.headers.get('x-request-id'), 'abc.DEF_1-2');
    for (const unsafe of ['has space', 'a'.repeat(65), 'semi;colon', '<script>', '']) {
      const replaced = await fetch(`${server.url}/nope`, { headers: { 'x-request-id': unsafe } });
      assert.match(replaced.headers.get('x-request-id') ?? '', UUID, unsafe);
      await replaced.arrayBuffer();
    }
  });

  it('logs each request once with the request id of its response', async () => {
    const response = await post(body({ extra: 1 }), { 'x-request-id': 'log-check-1' });
    await response.arrayBuffer();
    await new Promise((resolve) => setImmediate(resolve));
    const lines = logLines.filter((line) => line.requestId === 'log-check-1' && 'status' in line);
    assert.equal(lines.length, 1);
    assert.equal(lines[0].method, 'POST');
    assert.equal(lines[0].path, SEGMENT);
    assert.equal(lines[0].status, 400);
    assert.equal(typeof lines[0].ms, 'number');
  });
});

describe('POST /api/v1/image/segment body limits', () => {
  let server: TestServer;
  const limitBytes = Math.floor(0.01 * 1024 * 1024);

  before(async () => {
    server = await startTestServer({ env: { MAX_JSON_BODY_MB: '0.01' } });
  });
  after(async () => {
    await server.close();
  });

  it('answers a body one byte over the limit with 413 payload_too_large', async () => {
    const prefix = '{"image": "';
    const suffix = '", "prompts": [{"type": "text", "text": "a"}]}';
    const fill = 'A'.repeat(limitBytes + 1 - prefix.length - suffix.length);
    const payload = `${prefix}${fill}${suffix}`;
    assert.equal(Buffer.byteLength(payload), limitBytes + 1);
    await expectApiError(
      await postJson(`${server.url}${SEGMENT}`, payload),
      413,
      'payload_too_large',
    );
  });

  it('accepts a body at the limit (it reaches validation)', async () => {
    const prefix = '{"image": "';
    const suffix = '", "prompts": [{"type": "text", "text": "a"}], "x": 1}';
    const fill = 'A'.repeat(limitBytes - prefix.length - suffix.length);
    await expectApiError(
      await postJson(`${server.url}${SEGMENT}`, `${prefix}${fill}${suffix}`),
      400,
      'invalid_request',
      /\/x: unknown field/,
    );
  });

  it('counts the inflated size of a gzip body against the limit', async () => {
    const inflated = JSON.stringify(body({ image: 'A'.repeat(1024 * 1024) }));
    const compressed = gzipSync(inflated);
    assert.ok(compressed.length < limitBytes, 'the compressed body itself is under the limit');
    await expectApiError(
      await postJson(`${server.url}${SEGMENT}`, compressed, { 'content-encoding': 'gzip' }),
      413,
      'payload_too_large',
    );
  });
});
