/**
 * Starts the real app on an ephemeral port with real sockets, optionally with a real model
 * bundle and the real addon, and builds the tiny random-weight bundle tests use.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { loadConfig, type Config } from '../../src/config';
import { readBundleManifest } from '../../src/engine/bundle-manifest';
import { VisualizationStore } from '../../src/engine/visualization';
import { createLogger, type Logger } from '../../src/logging';
import { loadAddon } from '../../src/native/addon';
import { createApp } from '../../src/server/app';
import { EngineState, loadImageModel } from '../../src/server/engine-state';
import { closeGracefully, createHttpServer, listen } from '../../src/server/http-server';
import { exportRandomBundle } from './reference';

export interface StartServerOptions {
  /** Configuration variables over the test defaults (loopback host, port 0). */
  env?: Record<string, string>;
  /**
   * A model bundle to load with the real addon before the promise resolves (the server is
   * "ready"). Without it the server stays "loading" (validation and info routes still work).
   */
  bundleDir?: string;
  /** Receives the server's JSON log lines; without it logs are dropped. */
  logStream?: Writable;
}

export interface TestServer {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:41234. */
  url: string;
  config: Readonly<Config>;
  engineState: EngineState;
  server: Server;
  /** Closes sockets and the engine. */
  close(): Promise<void>;
}

export async function startTestServer(options: StartServerOptions = {}): Promise<TestServer> {
  const outputDir = mkdtempSync(path.join(os.tmpdir(), 'sam3-test-outputs-'));
  const env: Record<string, string> = {
    SERVER_HOST: '127.0.0.1',
    SERVER_PORT: '0',
    LOG_LEVEL: 'DEBUG',
    OUTPUT_DIR: outputDir,
  };
  if (options.bundleDir !== undefined) {
    // The bundle decides the resolution; a test may still override it to provoke a mismatch.
    const manifest = await readBundleManifest(options.bundleDir);
    env.IMAGE_MODEL_RESOLUTION = String(manifest.resolution);
  }
  Object.assign(env, options.env);
  const cudaDeviceCount =
    options.bundleDir === undefined ? 0 : loadAddon().runtimeInfo().cudaDeviceCount;
  const config = loadConfig(env, { cudaDeviceCount });
  const logger: Logger =
    options.logStream === undefined
      ? createLogger({ level: config.logLevel, format: 'json', silent: true })
      : createLogger({ level: config.logLevel, format: 'json', stream: options.logStream });

  const engineState = new EngineState(config.imageModelDevice);
  if (options.bundleDir !== undefined) {
    await loadImageModel(engineState, config, loadAddon, logger, options.bundleDir);
  }
  const visualizations = new VisualizationStore({
    outputDir: config.outputDir,
    maxFiles: config.outputMaxFiles,
    maxAgeMs: config.outputMaxAgeSeconds * 1000,
    logger,
  });
  await visualizations.init();
  const app = createApp({ config, engineState, logger, visualizations });
  const server = createHttpServer(app, config);
  const address = await listen(server, config.serverHost, config.serverPort);
  return {
    url: `http://${address.address}:${address.port}`,
    config,
    engineState,
    server,
    async close() {
      engineState.markStopping();
      await closeGracefully(server, 0);
      await engineState.close();
      visualizations.close();
      rmSync(outputDir, { recursive: true, force: true });
    },
  };
}

let tinyBundle: Promise<string> | undefined;

/**
 * Exports the tiny random-weight bundle (tools/export_sam3.py --tiny-random --seed 0) into a
 * temporary directory, once per test process; the directory is removed when the process exits.
 */
export function exportTinyBundle(): Promise<string> {
  tinyBundle ??= (async () => {
    const out = mkdtempSync(path.join(os.tmpdir(), 'sam3-tiny-bundle-'));
    process.on('exit', () => rmSync(out, { recursive: true, force: true }));
    await exportRandomBundle(out, 'tiny', 0);
    return out;
  })();
  return tinyBundle;
}

/** The body of a 200 from POST /api/v1/image/segment (SPEC.md). */
export interface SegmentResponse {
  masks: { size: [number, number]; counts: string }[];
  boxes: number[][];
  scores: number[];
  labels: string[];
  num_masks: number;
  image_size: { width: number; height: number };
  visualization_url: string | null;
  inference_time_ms: number;
}

/** POSTs JSON (or a raw string/buffer body) and returns the response. */
export function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: payload,
  });
}

/** Traces of internals that must never reach a client: stack frames, file paths, addresses. */
const LEAK_PATTERN = /\bat .+:\d+:\d+|\/(?:work|home|tmp|usr)\/|node_modules|0x[0-9a-f]{8,}/i;

/**
 * Asserts the SPEC error shape: `status`, a JSON body of exactly {error: {code, message}},
 * X-Request-Id present, and no stack, path or address in the message. Returns the message.
 */
export async function expectApiError(
  response: Response,
  status: number,
  code: string,
  messagePattern?: RegExp,
): Promise<string> {
  const text = await response.text();
  assert.equal(response.status, status, `status of ${text}`);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
  assert.ok(response.headers.get('x-request-id'), 'X-Request-Id header');
  const body = JSON.parse(text) as { error: { code: string; message: string } };
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error), ['code', 'message']);
  assert.equal(body.error.code, code, `code of ${text}`);
  assert.equal(typeof body.error.message, 'string');
  assert.doesNotMatch(body.error.message, LEAK_PATTERN);
  if (messagePattern !== undefined) assert.match(body.error.message, messagePattern);
  return body.error.message;
}
