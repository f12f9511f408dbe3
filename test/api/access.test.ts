/**
 * Access controls over real sockets (SECURITY.md rows 14-17): API keys, the per-client rate
 * limit, CORS and prototype pollution, on servers whose model is still loading (auth, limits and
 * validation all answer before the engine is needed).
 */
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  API_KEY_HEADER,
  checkApiKey,
  createApiKeyVerifier,
  hasQueryStringKey,
  presentedApiKey,
} from '../../src/server/auth';
import { expectApiError, postJson, startTestServer, type TestServer } from '../helpers/server';

const SEGMENT = '/api/v1/image/segment';
const KEY_A = 'alpha-key-0123456789';
const KEY_B = 'beta-key-9876543210';
const KEYS_ENV = { REQUIRE_API_KEY: 'true', API_KEYS: `${KEY_A},${KEY_B}` };
/** A 1x1 PNG; never decoded here (the model is not ready), only validated. */
const TINY_PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';
const VALID_SEGMENT_BODY = { image: TINY_PNG, prompts: [{ type: 'text', text: 'person' }] };

/** An empty body: once past auth and the limiter, validation answers 400 naming /image. */
async function expectPastAccessControls(response: Response): Promise<void> {
  await expectApiError(response, 400, 'invalid_request', /\/image: is required/);
}

async function expectUnauthorized(response: Response, message: RegExp): Promise<void> {
  assert.equal(response.headers.get('www-authenticate'), 'ApiKey');
  await expectApiError(response, 401, 'unauthorized', message);
}

describe('createApiKeyVerifier and checkApiKey (shared with the WebSocket upgrade)', () => {
  const verify = createApiKeyVerifier([KEY_A, KEY_B]);

  it('accepts exactly the configured keys', () => {
    assert.equal(verify(KEY_A), true);
    assert.equal(verify(KEY_B), true);
    assert.equal(verify(`${KEY_A} `), false);
    assert.equal(verify(KEY_A.slice(0, -1)), false);
    assert.equal(verify(KEY_A.toUpperCase()), false);
    assert.equal(verify('x'), false);
    assert.equal(verify('x'.repeat(10_000)), false);
    assert.equal(verify(''), false);
    assert.equal(verify(undefined), false);
  });

  it('accepts nothing when no keys are configured', () => {
    const none = createApiKeyVerifier([]);
    assert.equal(none(KEY_A), false);
    assert.equal(none(''), false);
  });

  it('decides an upgrade request from its headers and URL alone', () => {
    assert.deepEqual(checkApiKey(verify, { 'x-api-key': KEY_B }, '/ws/propagate/s1'), {
      ok: true,
    });
    const missing = checkApiKey(verify, {}, '/ws/propagate/s1');
    assert.equal(missing.ok, false);
    const inQuery = checkApiKey(verify, {}, `/ws/propagate/s1?api_key=${KEY_A}`);
    assert.equal(inQuery.ok, false);
    assert.match(inQuery.ok ? '' : inQuery.message, /query string.*X-API-Key header/);
    assert.doesNotMatch(inQuery.ok ? '' : inQuery.message, new RegExp(KEY_A));
  });

  it('reads a sam3.key. subprotocol as the key of WebSocket upgrades only', () => {
    const protocol = `sam3.v1, sam3.key.${Buffer.from(KEY_A).toString('base64url')}`;
    const upgrade = { upgrade: 'websocket', 'sec-websocket-protocol': protocol };
    assert.equal(presentedApiKey(upgrade), KEY_A);
    assert.deepEqual(checkApiKey(verify, upgrade, '/ws/propagate/s1'), { ok: true });
    assert.equal(presentedApiKey({ 'sec-websocket-protocol': protocol }), undefined, 'not HTTP');
    assert.equal(
      presentedApiKey({ ...upgrade, 'x-api-key': KEY_B }),
      KEY_B,
      'the header wins over the subprotocol',
    );
    assert.equal(
      presentedApiKey({ upgrade: 'websocket', 'sec-websocket-protocol': 'sam3.v1' }),
      undefined,
    );
  });

  it('recognizes key-like query parameters whatever their case', () => {
    for (const query of ['api_key=1', 'apiKey=1', 'key=1', 'API-KEY=1', 'a=1&x-api-key=2']) {
      assert.equal(hasQueryStringKey(`/p?${query}`), true, query);
    }
    assert.equal(hasQueryStringKey('/p?keys=1&monkey=2'), false);
    assert.equal(hasQueryStringKey('/p'), false);
  });
});

describe('API keys (REQUIRE_API_KEY=true)', () => {
  let server: TestServer;
  const logText: string[] = [];

  before(async () => {
    const logStream = new PassThrough();
    logStream.on('data', (chunk: Buffer) => logText.push(chunk.toString('utf8')));
    server = await startTestServer({
      env: { ...KEYS_ENV, RATE_LIMIT_ENABLED: 'false' },
      logStream,
    });
  });
  after(async () => {
    await server.close();
  });

  const post = (
    payload: unknown,
    headers?: Record<string, string>,
    query = '',
  ): Promise<Response> => postJson(`${server.url}${SEGMENT}${query}`, payload, headers);

  it('refuses a request without a key with 401 and a WWW-Authenticate challenge', async () => {
    await expectUnauthorized(await post({}), /missing API key; send it in the X-API-Key header/);
  });

  it('refuses a wrong key of the same length with 401', async () => {
    const wrong = `${KEY_A.slice(0, -1)}X`;
    assert.equal(wrong.length, KEY_A.length);
    await expectUnauthorized(await post({}, { [API_KEY_HEADER]: wrong }), /^invalid API key$/);
  });

  it('refuses wrong keys of other lengths with 401 (never 500)', async () => {
    for (const wrong of ['x', KEY_A.slice(0, 5), `${KEY_A}${KEY_A}`, 'k'.repeat(4000)]) {
      await expectUnauthorized(await post({}, { [API_KEY_HEADER]: wrong }), /^invalid API key$/);
    }
  });

  it('never accepts a valid key from the query string, and says to use the header', async () => {
    for (const name of ['api_key', 'apiKey', 'key']) {
      await expectUnauthorized(
        await post({}, {}, `?${name}=${encodeURIComponent(KEY_A)}`),
        /not accepted in the query string; send the key in the X-API-Key header/,
      );
    }
  });

  it('lets a valid key through to validation (400) and to the engine (503 not_ready)', async () => {
    await expectPastAccessControls(await post({}, { [API_KEY_HEADER]: KEY_A }));
    await expectPastAccessControls(await post({}, { [API_KEY_HEADER]: KEY_B }));
    const response = await post(VALID_SEGMENT_BODY, { [API_KEY_HEADER]: KEY_B });
    await expectApiError(response, 503, 'not_ready', /loading/);
  });

  it('keeps GET /, /health, /docs (with its assets) and /openapi.json open without a key', async () => {
    const expected: [string, number][] = [
      ['/', 200],
      ['/health', 503],
      ['/docs', 200],
      ['/docs/swagger-ui.css', 200],
      ['/docs/swagger-ui-bundle.js', 200],
      ['/docs/init.js', 200],
      ['/openapi.json', 200],
    ];
    for (const [path, status] of expected) {
      const response = await fetch(`${server.url}${path}`);
      await response.arrayBuffer();
      assert.equal(response.status, status, path);
      const head = await fetch(`${server.url}${path}`, { method: 'HEAD' });
      assert.equal(head.status, status, `HEAD ${path}`);
    }
  });

  it('answers 401 (not 404) for unknown routes and for variants of the open paths', async () => {
    await expectUnauthorized(await fetch(`${server.url}/nope`), /missing API key/);
    await expectUnauthorized(await fetch(`${server.url}/health`, { method: 'POST' }), /missing/);
    await expectUnauthorized(await fetch(`${server.url}/HEALTH`), /missing API key/);
    await expectUnauthorized(await fetch(`${server.url}/docs/`), /missing API key/);
  });

  it('never writes a presented key to the log', async () => {
    const wrongKey = 'wrong-key-that-must-not-be-logged';
    await (await post({}, { [API_KEY_HEADER]: wrongKey })).arrayBuffer();
    await (await post({}, {}, `?api_key=${KEY_B}`)).arrayBuffer();
    await (await post({}, { [API_KEY_HEADER]: KEY_A })).arrayBuffer();
    await new Promise((resolve) => setImmediate(resolve));
    const logged = logText.join('');
    assert.match(logged, /unauthorized/, 'refusals are logged');
    for (const key of [wrongKey, KEY_A, KEY_B]) assert.ok(!logged.includes(key), key);
  });
});

describe('API keys not required (the default)', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer({ env: { RATE_LIMIT_ENABLED: 'false' } });
  });
  after(async () => {
    await server.close();
  });

  it('serves protected routes without a key', async () => {
    await expectPastAccessControls(await postJson(`${server.url}${SEGMENT}`, {}));
  });
});

describe('rate limit (3 requests per 2 s window)', () => {
  const WINDOW_SECONDS = 2;
  const LIMIT_ENV = {
    RATE_LIMIT_ENABLED: 'true',
    RATE_LIMIT_REQUESTS_PER_MINUTE: '3',
    RATE_LIMIT_WINDOW_SECONDS: String(WINDOW_SECONDS),
    TRUST_PROXY_HOPS: '0',
  };
  // A fresh server per test: every test starts with full budgets.
  const servers: TestServer[] = [];
  const start = async (env: Record<string, string> = {}): Promise<TestServer> => {
    const server = await startTestServer({ env: { ...LIMIT_ENV, ...env } });
    servers.push(server);
    return server;
  };
  after(async () => {
    await Promise.all(servers.map((server) => server.close()));
  });

  async function expectRateLimited(response: Response): Promise<number> {
    const retryAfter = Number(response.headers.get('retry-after'));
    assert.ok(
      Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= WINDOW_SECONDS,
      `Retry-After ${response.headers.get('retry-after')}`,
    );
    assert.equal(response.headers.get('ratelimit'), `limit=3, remaining=0, reset=${retryAfter}`);
    assert.equal(response.headers.get('ratelimit-policy'), `3;w=${WINDOW_SECONDS}`);
    await expectApiError(response, 429, 'rate_limited', /at most 3 per 2 s per client/);
    return retryAfter;
  }

  it('passes requests 1-3 with RateLimit headers, refuses the 4th with 429, recovers after Retry-After', async () => {
    const server = await start();
    for (let index = 1; index <= 3; index += 1) {
      const response = await postJson(`${server.url}${SEGMENT}`, {});
      assert.match(
        response.headers.get('ratelimit') ?? '',
        new RegExp(`^limit=3, remaining=${3 - index}, reset=[12]$`),
      );
      await expectPastAccessControls(response);
    }
    const retryAfter = await expectRateLimited(await postJson(`${server.url}${SEGMENT}`, {}));
    await sleep(retryAfter * 1000 + 100);
    await expectPastAccessControls(await postJson(`${server.url}${SEGMENT}`, {}));
  });

  it('is not bypassed by rotating X-Forwarded-For when no proxy is trusted', async () => {
    const server = await start();
    const forwarded = ['203.0.113.1', '203.0.113.2', '198.51.100.7', '2001:db8::1'];
    for (const address of forwarded.slice(0, 3)) {
      const response = await postJson(
        `${server.url}${SEGMENT}`,
        {},
        { 'x-forwarded-for': address },
      );
      await expectPastAccessControls(response);
    }
    await expectRateLimited(
      await postJson(`${server.url}${SEGMENT}`, {}, { 'x-forwarded-for': forwarded[3] }),
    );
  });

  it('believes X-Forwarded-For from exactly TRUST_PROXY_HOPS proxies', async () => {
    const server = await start({ TRUST_PROXY_HOPS: '1' });
    // One trusted hop: the proxy's own entry (the last one) names the client.
    for (let index = 0; index < 3; index += 1) {
      const response = await postJson(
        `${server.url}${SEGMENT}`,
        {},
        { 'x-forwarded-for': '203.0.113.1' },
      );
      await expectPastAccessControls(response);
    }
    await expectRateLimited(
      await postJson(`${server.url}${SEGMENT}`, {}, { 'x-forwarded-for': '203.0.113.1' }),
    );
    // A different client behind the same proxy has its own budget; an entry the client
    // prepended itself (before the proxy's) changes nothing.
    await expectPastAccessControls(
      await postJson(`${server.url}${SEGMENT}`, {}, { 'x-forwarded-for': '203.0.113.2' }),
    );
    await expectRateLimited(
      await postJson(`${server.url}${SEGMENT}`, {}, { 'x-forwarded-for': '10.9.9.9, 203.0.113.1' }),
    );
  });

  it('gives each valid API key its own budget, and invalid keys none', async () => {
    const server = await start(KEYS_ENV);
    const post = (headers: Record<string, string>): Promise<Response> =>
      postJson(`${server.url}${SEGMENT}`, {}, headers);
    for (let index = 0; index < 3; index += 1) {
      await expectPastAccessControls(await post({ [API_KEY_HEADER]: KEY_A }));
    }
    await expectRateLimited(await post({ [API_KEY_HEADER]: KEY_A }));
    for (let index = 0; index < 3; index += 1) {
      await expectPastAccessControls(await post({ [API_KEY_HEADER]: KEY_B }));
    }
    await expectRateLimited(await post({ [API_KEY_HEADER]: KEY_B }));
    // The address's own budget is untouched by the keyed requests; inventing a new wrong key
    // per request does not open new budgets (they all count against the address).
    for (let index = 0; index < 3; index += 1) {
      await expectUnauthorized(
        await post({ [API_KEY_HEADER]: `guess-${index}` }),
        /^invalid API key$/,
      );
    }
    await expectRateLimited(await post({ [API_KEY_HEADER]: 'guess-3' }));
  });

  it('keeps CORS headers and X-Request-Id on a 429 answer to a listed origin', async () => {
    const origin = 'https://app.example';
    const server = await start({ CORS_ORIGINS_LIST: origin });
    for (let index = 0; index < 3; index += 1) {
      await expectPastAccessControls(await postJson(`${server.url}${SEGMENT}`, {}, { origin }));
    }
    const limited = await postJson(
      `${server.url}${SEGMENT}`,
      {},
      {
        origin,
        'x-request-id': 'cors-429',
      },
    );
    assert.equal(limited.headers.get('access-control-allow-origin'), origin);
    assert.equal(limited.headers.get('x-request-id'), 'cors-429');
    await expectRateLimited(limited);
  });

  it('never limits /health', async () => {
    const server = await start();
    for (let index = 0; index < 10; index += 1) {
      const response = await fetch(`${server.url}/health`);
      await response.arrayBuffer();
      assert.equal(response.status, 503, `request ${index + 1} while the model loads`);
      assert.equal(response.headers.get('ratelimit'), null);
    }
    await expectPastAccessControls(await postJson(`${server.url}${SEGMENT}`, {}));
  });

  it('limits nothing when RATE_LIMIT_ENABLED=false', async () => {
    const server = await start({
      RATE_LIMIT_ENABLED: 'false',
      RATE_LIMIT_REQUESTS_PER_MINUTE: '1',
    });
    for (let index = 0; index < 5; index += 1) {
      const response = await postJson(`${server.url}${SEGMENT}`, {});
      assert.equal(response.headers.get('ratelimit'), null);
      await expectPastAccessControls(response);
    }
  });
});

describe('CORS (CORS_ORIGINS_LIST)', () => {
  const LISTED = 'https://app.example';
  let server: TestServer;

  before(async () => {
    server = await startTestServer({
      env: {
        ...KEYS_ENV,
        // A trailing slash in the list is ignored; "null" is never honoured by name.
        CORS_ORIGINS_LIST: `${LISTED}/,https://other.example,null`,
        RATE_LIMIT_ENABLED: 'false',
      },
    });
  });
  after(async () => {
    await server.close();
  });

  it('echoes a listed origin and exposes the request id, visualization and rate-limit headers', async () => {
    const response = await fetch(`${server.url}/health`, { headers: { origin: LISTED } });
    await response.arrayBuffer();
    assert.equal(response.headers.get('access-control-allow-origin'), LISTED);
    assert.equal(
      response.headers.get('access-control-expose-headers'),
      'X-Request-Id,X-Visualization-Skipped,Retry-After,RateLimit,RateLimit-Policy',
    );
    assert.match(response.headers.get('vary') ?? '', /\bOrigin\b/);
    assert.equal(response.headers.get('access-control-allow-credentials'), null);
  });

  it('sends no CORS headers to unlisted origins, "null" included', async () => {
    for (const origin of [
      'https://evil.example',
      'null',
      'https://app.example.evil.example',
      'http://app.example',
    ]) {
      const response = await fetch(`${server.url}/health`, { headers: { origin } });
      await response.arrayBuffer();
      assert.equal(response.headers.get('access-control-allow-origin'), null, origin);
      assert.equal(response.headers.get('access-control-expose-headers'), null, origin);
      assert.match(response.headers.get('vary') ?? '', /\bOrigin\b/, origin);
    }
  });

  it('answers a listed origin preflight with 204, without a key', async () => {
    const response = await fetch(`${server.url}${SEGMENT}`, {
      method: 'OPTIONS',
      headers: {
        origin: LISTED,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type,x-api-key',
      },
    });
    assert.equal(await response.text(), '');
    assert.equal(response.status, 204);
    assert.equal(response.headers.get('access-control-allow-origin'), LISTED);
    assert.equal(response.headers.get('access-control-allow-methods'), 'GET,POST,DELETE');
    assert.equal(
      response.headers.get('access-control-allow-headers'),
      'Content-Type,X-API-Key,X-Request-Id',
    );
    assert.equal(response.headers.get('access-control-max-age'), '600');
    assert.ok(response.headers.get('x-request-id'));
  });

  it('does not answer an unlisted origin preflight (it reaches the key check: 401)', async () => {
    const response = await fetch(`${server.url}${SEGMENT}`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    });
    assert.equal(response.headers.get('access-control-allow-origin'), null);
    assert.equal(response.headers.get('access-control-allow-methods'), null);
    await expectUnauthorized(response, /missing API key/);
  });

  it('keeps CORS headers and X-Request-Id on a 401 answer to a listed origin', async () => {
    const headers = { origin: 'https://other.example', 'x-request-id': 'cors-401' };
    const refused = await postJson(`${server.url}${SEGMENT}`, {}, headers);
    assert.equal(refused.headers.get('access-control-allow-origin'), 'https://other.example');
    assert.equal(refused.headers.get('x-request-id'), 'cors-401');
    await expectUnauthorized(refused, /missing API key/);
  });
});

describe('CORS with "*" in the list', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer({ env: { CORS_ORIGINS_LIST: '*' } });
  });
  after(async () => {
    await server.close();
  });

  it('allows any origin with a literal "*"', async () => {
    for (const origin of ['https://anything.example', 'null']) {
      const response = await fetch(`${server.url}/health`, { headers: { origin } });
      await response.arrayBuffer();
      assert.equal(response.headers.get('access-control-allow-origin'), '*', origin);
    }
  });
});

describe('CORS with no origins listed (the default)', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.close();
  });

  it('sends no Access-Control-Allow-Origin to anyone', async () => {
    const response = await fetch(`${server.url}/health`, {
      headers: { origin: 'https://app.example' },
    });
    await response.arrayBuffer();
    assert.equal(response.headers.get('access-control-allow-origin'), null);
  });
});

describe('prototype pollution through an authorized request', () => {
  let server: TestServer;

  before(async () => {
    server = await startTestServer({ env: KEYS_ENV });
  });
  after(async () => {
    await server.close();
  });

  it('answers {"__proto__": {"admin": true}} with 400 and pollutes nothing', async () => {
    const headers = { [API_KEY_HEADER]: KEY_A };
    for (const raw of [
      '{"__proto__": {"admin": true}}',
      '{"constructor": {"prototype": {"admin": true}}}',
    ]) {
      await expectApiError(
        await postJson(`${server.url}${SEGMENT}`, raw, headers),
        400,
        'invalid_request',
      );
    }
    assert.equal(({} as Record<string, unknown>).admin, undefined);
    assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'admin'), false);
  });
});
