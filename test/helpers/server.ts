/**
 * Starts the real app on an ephemeral port with real sockets, optionally with a real model
 * bundle and the real addon, and builds the tiny random-weight bundle tests use.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import {
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import type { Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { loadConfig, type Config } from '../../src/config';
import { readBundleManifest } from '../../src/engine/bundle-manifest';
import { Models } from '../../src/engine/models';
import { VisualizationStore } from '../../src/engine/visualization';
import { createLogger, type Logger } from '../../src/logging';
import { loadAddon } from '../../src/native/addon';
import { createApp } from '../../src/server/app';
import { EngineState } from '../../src/server/engine-state';
import { closeGracefully, createHttpServer, listen } from '../../src/server/http-server';
import { ServerMetrics, startMetricsServer } from '../../src/server/metrics';
import { PropagationSockets } from '../../src/server/ws';
import { exportRandomBundle, joinVisionEncoder, runExporter } from './reference';
import { repoPath } from './repo';

export interface StartServerOptions {
  /** Configuration variables over the test defaults (loopback host, port 0). */
  env?: Record<string, string>;
  /**
   * A model bundle to load with the real addon before the promise resolves (the image model
   * and video sessions are "ready", or failed). Without it the server stays "loading"
   * (validation and info routes still work).
   */
  bundleDir?: string;
  /** Receives the server's JSON log lines; without it logs are dropped. */
  logStream?: Writable;
  /** Serve Prometheus metrics on a listener of their own (127.0.0.1, a free port). */
  metrics?: boolean;
}

export interface TestServer {
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:41234. */
  url: string;
  /** ws:// base URL without a trailing slash. */
  wsUrl: string;
  config: Readonly<Config>;
  engineState: EngineState;
  /** The engine's lifecycle (video sessions, leak counters). */
  models: Models;
  webSockets: PropagationSockets;
  server: Server;
  /** With `metrics`: the metrics listener's base URL (GET /metrics). */
  metricsUrl: string | null;
  /** Closes sockets, sessions and the engines (as a SIGTERM does). */
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

  const models = new Models({ config, logger, loadAddon });
  const engineState = new EngineState(models);
  if (options.bundleDir !== undefined) await models.load(options.bundleDir);
  const visualizations = new VisualizationStore({
    outputDir: config.outputDir,
    maxFiles: config.outputMaxFiles,
    maxAgeMs: config.outputMaxAgeSeconds * 1000,
    maxBytes: config.outputMaxBytes,
    maxFileBytes: config.outputMaxFileBytes,
    logger,
  });
  await visualizations.init();
  const webSockets = new PropagationSockets({ config, engineState, logger });
  const metrics = options.metrics === true ? new ServerMetrics(engineState) : undefined;
  const app = createApp({ config, engineState, logger, visualizations, webSockets, metrics });
  const server = createHttpServer(app, config, logger, metrics?.observeRefusal);
  const address = await listen(server, config.serverHost, config.serverPort);
  const metricsServer =
    metrics === undefined ? null : await startMetricsServer(metrics, '127.0.0.1', 0);
  return {
    metricsUrl:
      metricsServer === null
        ? null
        : `http://${metricsServer.address.address}:${metricsServer.address.port}`,
    url: `http://${address.address}:${address.port}`,
    wsUrl: `ws://${address.address}:${address.port}`,
    config,
    engineState,
    models,
    webSockets,
    server,
    async close() {
      engineState.markStopping();
      await webSockets.closeAll();
      await closeGracefully(server, 0);
      if (metricsServer !== null) await closeGracefully(metricsServer.server, 0);
      await engineState.close();
      visualizations.close();
      rmSync(outputDir, { recursive: true, force: true });
    },
  };
}

/** One scrape of the server's metrics listener (started with `metrics: true`). */
export async function scrape(server: TestServer): Promise<string> {
  const response = await fetch(`${server.metricsUrl}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain/);
  return response.text();
}

/** The value of one sample line of a scrape, e.g. `name{a="b"}`; NaN when absent. */
export function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? Number.NaN : Number(line.slice(series.length + 1));
}

let tinyBundle: Promise<string> | undefined;
let compiledBundle: Promise<string> | undefined;

/**
 * A digest of everything an exported random bundle depends on: the exporter's Python sources
 * (tools/) and the Python environment (its pyvenv.cfg names the interpreter; the packages are
 * pinned by setup).
 */
export async function exporterFingerprint(): Promise<string> {
  const hash = createHash('sha256');
  const files: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory() && entry.name !== '__pycache__' && entry.name !== 'tests') {
        await walk(file);
      } else if (entry.isFile() && entry.name.endsWith('.py')) {
        files.push(file);
      }
    }
  };
  await walk(repoPath('tools'));
  for (const file of [...files.sort(), repoPath('.venv', 'pyvenv.cfg')]) {
    hash.update(path.relative(repoPath(), file)).update('\0');
    hash.update(await readFile(file)).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

/**
 * A random-weight bundle (tools/export_sam3.py --tiny-random), exported once per exporter
 * version and shared by the test processes of a run (and later runs) under the system temp
 * dir: an export takes about a minute here.
 */
export function cachedRandomBundle(preset: string, seed: number): Promise<string> {
  return cachedBundle(`${preset}-${seed}`, (dir) => exportRandomBundle(dir, preset, seed));
}

/**
 * The bundle `name` as `write` exports it, once per exporter version (see cachedRandomBundle).
 * The export goes to a staging directory that is renamed into place, so a process never sees a
 * partial bundle; older exports of the same name are removed.
 */
async function cachedBundle(name: string, write: (dir: string) => Promise<void>): Promise<string> {
  const root = path.join(os.tmpdir(), 'sam3-test-bundles');
  const prefix = `${name}-`;
  const dir = path.join(root, `${prefix}${await exporterFingerprint()}`);
  if (existsSync(path.join(dir, 'manifest.json'))) return dir;
  await mkdir(root, { recursive: true });
  const staging = await mkdtemp(`${dir}.staging-`);
  try {
    await write(staging);
    await rename(staging, dir).catch((error: unknown) => {
      // Another process got there first (the target then exists and is not empty).
      if (!existsSync(path.join(dir, 'manifest.json'))) throw error;
    });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  for (const entry of await readdir(root)) {
    const stale = path.join(root, entry);
    const fingerprint = /^[0-9a-f]{16}$/.test(entry.slice(prefix.length));
    if (entry.startsWith(prefix) && fingerprint && stale !== dir) {
      await rm(stale, { recursive: true, force: true });
    }
  }
  return dir;
}

/** The tiny random-weight bundle (preset tiny, seed 0; with the video tracker modules). */
export function exportTinyBundle(): Promise<string> {
  tinyBundle ??= cachedRandomBundle('tiny', 0);
  return tinyBundle;
}

/** The tiny bundle's weights exported again with --compile (vision_trunk.pt2 beside the rest). */
export function compiledTinyBundle(): Promise<string> {
  compiledBundle ??= cachedBundle('tiny-0-compiled', async (dir) =>
    runExporter(['--from-bundle', await exportTinyBundle(), '--compile', '--out', dir]),
  );
  return compiledBundle;
}

/** A bundle's manifest, as far as the tests' variants edit it. */
export interface EditableManifest {
  modules: Record<string, { file: string; compiled?: string; compiled_cpu_flags?: string[] }>;
}

/**
 * The bundle at `from` again at `dir` (which must not exist), its files linked, with the
 * manifest `edit` rewrote: a variant for one test.
 */
export async function editedBundle(
  from: string,
  dir: string,
  edit: (manifest: EditableManifest) => void,
): Promise<string> {
  const manifest = JSON.parse(await readFile(path.join(from, 'manifest.json'), 'utf8'));
  edit(manifest);
  await mkdir(dir);
  for (const file of await readdir(from)) {
    if (file !== 'manifest.json') await symlink(path.join(from, file), path.join(dir, file));
  }
  await writeFile(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}

/**
 * The tiny bundle at `dir` as exporters before version 5 wrote it: format 3, one vision encoder
 * of one image per call (batch 1 on pixel_values and the six maps).
 */
export async function singleImageBundle(dir: string): Promise<string> {
  await joinVisionEncoder(await exportTinyBundle(), dir);
  const manifestFile = path.join(dir, 'manifest.json');
  const manifest = JSON.parse(await readFile(manifestFile, 'utf8'));
  const vision = manifest.modules.vision_encoder;
  for (const spec of [...vision.inputs, ...vision.outputs]) spec.shape[0] = 1;
  await writeFile(manifestFile, JSON.stringify(manifest));
  return dir;
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

/** Asserts `status` (200 by default) and a JSON body; returns the body. */
export async function expectJson<T>(response: Response, status = 200): Promise<T> {
  const text = await response.text();
  assert.equal(response.status, status, `status of ${text.slice(0, 500)}`);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
  return JSON.parse(text) as T;
}

/** The video_info of a start response (SPEC.md). */
export interface VideoInfoBody {
  total_frames: number;
  fps: number;
  resolution: { width: number; height: number };
  duration_seconds: number;
}

/** One object of a propagation frame. */
export interface TrackedObjectBody {
  id: number;
  mask: { size: [number, number]; counts: string };
  box: number[];
  score: number;
  present: boolean;
}

/** A line of an NDJSON propagation stream, or a WebSocket message. */
export type StreamMessage =
  | { type: 'frame'; frame_index: number; objects: TrackedObjectBody[] }
  | { type: 'complete'; total_frames: number }
  | { type: 'error'; error: { code: string; message: string } };

/** A small client of the video session API of one server. */
export class VideoApi {
  constructor(
    readonly baseUrl: string,
    readonly headers: Record<string, string> = {},
  ) {}

  session(id: string, suffix = ''): string {
    return `${this.baseUrl}/api/v1/video/session/${id}${suffix}`;
  }

  start(body: unknown): Promise<Response> {
    return postJson(`${this.baseUrl}/api/v1/video/session/start`, body, this.headers);
  }

  /** Starts a session from a path and returns its id (asserting 200). */
  async startPath(videoPath: string, sessionId?: string): Promise<string> {
    const body = await expectJson<{ session_id: string }>(
      await this.start({ video_path: videoPath, ...(sessionId ? { session_id: sessionId } : {}) }),
    );
    return body.session_id;
  }

  prompt(id: string, body: unknown): Promise<Response> {
    return postJson(this.session(id, '/prompt'), body, this.headers);
  }

  /** A positive click at (x, y) on `frame` for `objId` (null: a new object); asserts 200. */
  async click(id: string, frame: number, x: number, y: number, objId: number | null = null) {
    return expectJson<{ obj_id: number[] }>(
      await this.prompt(id, {
        frame_index: frame,
        prompts: [{ type: 'point', points: [[x, y]], point_labels: [1] }],
        obj_id: objId,
      }),
    );
  }

  propagate(id: string, body: unknown = {}): Promise<Response> {
    return postJson(this.session(id, '/propagate'), body, this.headers);
  }

  /** A `stream: true` propagation's messages, in order (asserting 200 and NDJSON). */
  async stream(id: string, body: Record<string, unknown> = {}): Promise<StreamMessage[]> {
    const response = await this.propagate(id, { ...body, stream: true });
    const text = await response.text();
    assert.equal(response.status, 200, text.slice(0, 500));
    assert.equal(response.headers.get('content-type'), 'application/x-ndjson; charset=utf-8');
    assert.ok(text.endsWith('\n'), 'every line ends with a newline');
    return text
      .slice(0, -1)
      .split('\n')
      .map((line) => JSON.parse(line) as StreamMessage);
  }

  status(id: string): Promise<Response> {
    return fetch(this.session(id, '/status'), { headers: this.headers });
  }

  removeObject(id: string, objId: number | string): Promise<Response> {
    return fetch(this.session(id, `/object/${objId}`), { method: 'DELETE', headers: this.headers });
  }

  reset(id: string): Promise<Response> {
    return postJson(this.session(id, '/reset'), {}, this.headers);
  }

  close(id: string): Promise<Response> {
    return fetch(this.session(id), { method: 'DELETE', headers: this.headers });
  }

  list(): Promise<Response> {
    return fetch(`${this.baseUrl}/api/v1/video/sessions`, { headers: this.headers });
  }
}

/** Polls `probe` every 20 ms until it holds; throws after `ms` naming `what`. */
export async function waitFor(
  probe: () => Promise<boolean>,
  ms: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
