/**
 * GET /, /health, /openapi.json and /docs on a server whose model is still loading.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import Ajv2020 from 'ajv/dist/2020';
import { repoPath } from '../helpers/repo';
import { postJson, startTestServer, type TestServer } from '../helpers/server';

type Json = Record<string, unknown>;

describe('info routes while the model loads', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.close();
  });

  it('GET /health answers 503 "loading" in the SPEC shape', async () => {
    const response = await fetch(`${server.url}/health`);
    assert.equal(response.status, 503);
    assert.equal(response.headers.get('retry-after'), '5');
    assert.deepEqual(await response.json(), {
      status: 'loading',
      model: null,
      devices: [
        { device: 'cpu', role: 'image', status: 'loading' },
        { device: 'cpu', role: 'video', status: 'loading' },
      ],
      sessions: 0,
      random_weights: false,
    });
  });

  it('GET / names the server, its version and the docs', async () => {
    const response = await fetch(`${server.url}/`);
    assert.equal(response.status, 200);
    const { version } = JSON.parse(readFileSync(repoPath('package.json'), 'utf8')) as Json;
    assert.deepEqual(await response.json(), {
      name: 'sam3-server',
      version,
      status: 'loading',
      model: null,
      random_weights: false,
      docs: '/docs',
      openapi: '/openapi.json',
    });
  });

  it('answers every info route with an X-Request-Id', async () => {
    for (const path of ['/', '/health', '/openapi.json', '/docs']) {
      const response = await fetch(`${server.url}${path}`);
      await response.arrayBuffer();
      assert.match(response.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/, path);
    }
  });

  it('sets helmet security headers and no X-Powered-By', async () => {
    const response = await fetch(`${server.url}/`);
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
    assert.ok(response.headers.get('content-security-policy'));
    assert.equal(response.headers.get('x-powered-by'), null);
  });

  describe('GET /openapi.json', () => {
    let doc: Json;
    before(async () => {
      const response = await fetch(`${server.url}/openapi.json`);
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
      doc = (await response.json()) as Json;
    });

    it('is an OpenAPI 3.1 document with the required top-level fields', () => {
      assert.equal(doc.openapi, '3.1.0');
      const info = doc.info as Json;
      assert.equal(info.title, 'SAM3 inference server');
      assert.equal(typeof info.version, 'string');
      assert.equal(typeof doc.paths, 'object');
      assert.equal(doc.jsonSchemaDialect, 'https://json-schema.org/draft/2020-12/schema');
    });

    it('documents POST /api/v1/image/segment with its request and responses', () => {
      const operation = ((doc.paths as Json)['/api/v1/image/segment'] as Json).post as Json;
      const content = ((operation.requestBody as Json).content as Json)['application/json'] as Json;
      assert.deepEqual(content.schema, { $ref: '#/components/schemas/SegmentRequest' });
      assert.deepEqual(Object.keys(operation.responses as Json).sort(), [
        '200',
        '400',
        '401',
        '413',
        '415',
        '422',
        '429',
        '500',
        '503',
      ]);
      const cached = ((doc.paths as Json)['/api/v1/image/cached-features'] as Json).post as Json;
      const cachedBody = ((cached.requestBody as Json).content as Json)['application/json'] as Json;
      assert.deepEqual(cachedBody.schema, { $ref: '#/components/schemas/CachedFeaturesRequest' });
      for (const path of ['/', '/health', '/openapi.json', '/docs']) {
        assert.ok((doc.paths as Json)[path], path);
      }
    });

    it('has schemas that all compile with ajv (2020-12, strict) and resolvable refs', () => {
      const ajv = new Ajv2020({ strict: true, discriminator: true });
      const schemas = (doc.components as Json).schemas as Json;
      for (const [name, schema] of Object.entries(schemas)) {
        assert.doesNotThrow(() => ajv.compile(schema as Json), name);
      }
      const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
      assert.ok(refs.length > 0);
      for (const ref of refs) {
        const pointer = ref.slice('"$ref":"#/'.length, -1).split('/');
        let node: unknown = doc;
        for (const part of pointer) node = (node as Json)[part];
        assert.ok(node !== undefined, `${ref} resolves`);
      }
    });

    it('publishes the schema the server validates with', async () => {
      const ajv = new Ajv2020({ strict: true, discriminator: true });
      const schemas = (doc.components as Json).schemas as Json;
      const validate = ajv.compile(schemas.SegmentRequest as Json);
      const operation = ((doc.paths as Json)['/api/v1/image/segment'] as Json).post as Json;
      const example = (
        ((operation.requestBody as Json).content as Json)['application/json'] as Json
      ).example;
      assert.equal(validate(example), true);
      const invalid = { image: 'x', prompts: [{ type: 'text', text: 'a' }], extra: 1 };
      assert.equal(validate(invalid), false);
      const response = await postJson(`${server.url}/api/v1/image/segment`, invalid);
      assert.equal(response.status, 400);
      await response.arrayBuffer();
    });
  });

  it('GET /docs is Swagger UI over /openapi.json, every asset from this server', async () => {
    const response = await fetch(`${server.url}/docs`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/html/);
    const csp = response.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'self'(;|$)/, 'scripts from this server only');
    const html = await response.text();
    assert.match(html, /^<!doctype html>/);
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//i, 'no CDN');
    assert.doesNotMatch(html, /<script>/i, 'no inline script (CSP)');
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(assets, [
      '/docs/swagger-ui.css',
      '/docs/swagger-ui-bundle.js',
      '/docs/init.js',
    ]);
    for (const asset of assets) {
      const file = await fetch(`${server.url}${asset}`);
      assert.equal(file.status, 200, asset);
      const type = asset.endsWith('.css') ? /^text\/css/ : /^text\/javascript/;
      assert.match(file.headers.get('content-type') ?? '', type, asset);
      assert.ok((await file.text()).length > 0, asset);
    }
    const init = await (await fetch(`${server.url}/docs/init.js`)).text();
    assert.match(init, /url: '\/openapi\.json'/);
    assert.match(init, /validatorUrl: null/);
  });
});
