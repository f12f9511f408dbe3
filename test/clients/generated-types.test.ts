/**
 * clients/typescript/src/api-types.ts is what scripts/generate-client-types.ts generates now
 * (a schema change without `npm run generate:client` fails here), and the document it is
 * generated from is the one a running server serves at GET /openapi.json.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import {
  API_TYPES_FILE,
  defaultConfig,
  generateClientTypes,
  serverOpenApiDocument,
} from '../../scripts/generate-client-types';
import { expectJson, startTestServer, type TestServer } from '../helpers/server';

describe('generated client types', () => {
  let server: TestServer;

  before(async () => {
    // No bundle: /openapi.json does not depend on the model.
    server = await startTestServer();
  });

  after(async () => {
    await server?.close();
  });

  it('the committed api-types.ts equals a fresh generation (run npm run generate:client)', async () => {
    const committed = await readFile(API_TYPES_FILE, 'utf8');
    const generated = await generateClientTypes();
    assert.ok(
      committed === generated,
      'clients/typescript/src/api-types.ts is out of date: run npm run generate:client',
    );
    assert.match(committed, /^\/\*\*\n \* GENERATED FILE, DO NOT EDIT\./);
  });

  it('generates from the document the server serves', async () => {
    const served = await expectJson<Record<string, unknown>>(
      await fetch(`${server.url}/openapi.json`),
    );
    assert.deepEqual(served, serverOpenApiDocument(server.config));
    // The test server's settings leave the document as with the defaults the types use.
    assert.deepEqual(served, serverOpenApiDocument(defaultConfig()));
  });

  it('carries every error code with its status, and the component schemas by name', async () => {
    const generated = await readFile(API_TYPES_FILE, 'utf8');
    const document = serverOpenApiDocument(defaultConfig());
    const codes = document['x-error-codes'] as Record<string, number>;
    for (const [code, status] of Object.entries(codes)) {
      assert.ok(generated.includes(`\n  ${code}: ${status},\n`), `error code ${code}`);
    }
    const schemas = (document.components as { schemas: Record<string, unknown> }).schemas;
    for (const name of Object.keys(schemas)) {
      assert.match(generated, new RegExp(`\\n    ${name}:\\s`), `schema ${name}`);
    }
  });
});
