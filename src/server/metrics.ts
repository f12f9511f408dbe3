/**
 * Prometheus metrics (prom-client) on a listener of their own (ENABLE_METRICS, METRICS_HOST,
 * METRICS_PORT): never on the API port, so scraping needs no API key and the API cannot be
 * used to read them.
 *
 * Requests are counted per route pattern (never the raw path: ids would explode the label
 * set), method and status; a client that hung up counts as status 499. The per-stage times
 * of image requests are read from the Server-Timing header the routes already send. Engine
 * figures (admission, feature cache, sessions, native memory) are read when scraped.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RequestHandler } from 'express';
import client from 'prom-client';
import type { AdmissionStats } from '../engine/admission';
import type { CacheStats } from '../engine/feature-cache';
import type { EngineState } from './engine-state';
import { routeLabel } from './request-context';

/** Request latency buckets, seconds: from a cached hit to a long video upload. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
/** Stage buckets, seconds. */
const STAGE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];

/** `stage;dur=12.3, other;dur=4` -> [[stage, ms], ...]. */
export function parseServerTiming(header: string): [string, number][] {
  const stages: [string, number][] = [];
  for (const entry of header.split(',')) {
    const match = /^\s*([A-Za-z0-9_]+);dur=([0-9.]+)\s*$/.exec(entry);
    if (match !== null) stages.push([match[1], Number(match[2])]);
  }
  return stages;
}

/** A counter whose value is read from a cumulative source when scraped. */
function cumulative(
  registry: client.Registry,
  name: string,
  help: string,
  labelNames: string[],
  read: () => [Record<string, string>, number][],
): void {
  new client.Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const [labels, value] of read()) this.inc(labels, value);
    },
  });
}

export class ServerMetrics {
  readonly registry = new client.Registry();
  private readonly requests: client.Counter;
  private readonly latency: client.Histogram;
  private readonly stages: client.Histogram;
  private readonly refused: client.Counter;

  constructor(engineState: EngineState) {
    const registry = this.registry;
    client.collectDefaultMetrics({ register: registry });
    this.requests = new client.Counter({
      name: 'sam3_http_requests_total',
      help: 'HTTP requests by route pattern, method and status (499: the client went away)',
      labelNames: ['route', 'method', 'status'],
      registers: [registry],
    });
    this.latency = new client.Histogram({
      name: 'sam3_http_request_duration_seconds',
      help: 'HTTP request latency by route pattern, method and status',
      labelNames: ['route', 'method', 'status'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
    this.stages = new client.Histogram({
      name: 'sam3_inference_stage_duration_seconds',
      help: 'Per-stage time of image requests (decode, hash, image_features, detect, ...)',
      labelNames: ['stage'],
      buckets: STAGE_BUCKETS,
      registers: [registry],
    });
    this.refused = new client.Counter({
      name: 'sam3_http_429_total',
      help: 'Requests refused with 429, by error code (overloaded, rate_limited, ...)',
      labelNames: ['reason'],
      registers: [registry],
    });

    const admission = (): { device: string; stats: AdmissionStats } => ({
      device: engineState.device,
      stats: engineState.admission(),
    });
    for (const [field, help] of [
      ['running', 'Image model requests in progress, per device'],
      ['queued', 'Image model requests waiting for admission, per device'],
    ] as const) {
      new client.Gauge({
        name: `sam3_admission_${field}`,
        help,
        labelNames: ['device'],
        registers: [registry],
        collect() {
          const { device, stats } = admission();
          this.set({ device }, stats[field]);
        },
      });
    }
    cumulative(
      registry,
      'sam3_admission_total',
      'Image model requests by admission outcome (admitted, rejected: queue full, cancelled: ' +
        'the client went away while waiting), per device',
      ['device', 'outcome'],
      () => {
        const { device, stats } = admission();
        return (['admitted', 'rejected', 'cancelled'] as const).map((outcome) => [
          { device, outcome },
          stats[outcome],
        ]);
      },
    );

    cumulative(
      registry,
      'sam3_image_batches_total',
      'Vision encoder calls of image requests by images per call (IMAGE_MODEL_BATCH_SIZE), ' +
        'per device',
      ['device', 'size'],
      () =>
        Object.entries(engineState.segmenter?.stats().imageBatches ?? {}).map(([size, calls]) => [
          { device: engineState.device, size },
          calls,
        ]),
    );

    const cache = (): CacheStats | null => engineState.segmenter?.stats().cache ?? null;
    for (const [name, field, help] of [
      ['sam3_feature_cache_hits_total', 'hits', 'Feature cache hits'],
      ['sam3_feature_cache_misses_total', 'misses', 'Feature cache misses'],
      ['sam3_feature_cache_evictions_total', 'evictions', 'Feature cache evictions'],
    ] as const) {
      cumulative(registry, name, help, [], () => [[{}, cache()?.[field] ?? 0]]);
    }
    new client.Gauge({
      name: 'sam3_feature_cache_bytes',
      help:
        'Feature bytes held for the cache: cached, in_flight (being computed), leased (no ' +
        'longer cached, still in use)',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const stats = cache();
        this.set({ state: 'cached' }, stats?.bytes ?? 0);
        this.set({ state: 'in_flight' }, stats?.inFlightBytes ?? 0);
        this.set({ state: 'leased' }, stats?.leasedBytes ?? 0);
      },
    });
    new client.Gauge({
      name: 'sam3_video_sessions_active',
      help: 'Open video sessions',
      registers: [registry],
      collect() {
        this.set(engineState.sessionCount());
      },
    });
    new client.Gauge({
      name: 'sam3_device_memory_bytes',
      help:
        "Accelerator memory by the caching allocator's count: allocated (in tensors), " +
        'reserved (taken from the device: allocated and cached); no samples on CPU',
      labelNames: ['device', 'kind'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { device, allocatedBytes, reservedBytes } of engineState.deviceMemory()) {
          this.set({ device, kind: 'allocated' }, allocatedBytes);
          this.set({ device, kind: 'reserved' }, reservedBytes);
        }
      },
    });
    new client.Gauge({
      name: 'sam3_native_memory_bytes',
      help: 'Bytes the model holds on its devices: image and text embeddings, video trackers',
      labelNames: ['kind'],
      registers: [registry],
      collect() {
        const memory = engineState.nativeMemory();
        if (memory === null) return;
        this.set({ kind: 'embeddings' }, memory.embeddings);
        this.set({ kind: 'trackers' }, memory.trackers);
      },
    });
  }

  /**
   * An answer the HTTP server gave outside the app (a malformed request, a timeout, a
   * connection over the per-address cap): counted as a request of no route.
   */
  readonly observeRefusal = (status: number, code: string): void => {
    this.requests.inc({ route: 'outside_app', method: 'none', status: String(status) });
    if (status === 429) this.refused.inc({ reason: code });
  };

  /** Counts and times every request when its response finishes or its client goes away. */
  middleware(): RequestHandler {
    return (req, res, next) => {
      const stop = this.latency.startTimer();
      let done = false;
      const observe = (): void => {
        if (done) return;
        done = true;
        // Unmatched paths share one label (raw paths would explode the label set).
        const route = routeLabel(req, res) ?? 'unmatched';
        const status = String(res.writableFinished ? res.statusCode : 499);
        const labels = { route, method: req.method, status };
        this.requests.inc(labels);
        stop(labels);
        if (res.statusCode === 429 && res.writableFinished) {
          this.refused.inc({ reason: res.locals.errorCode ?? 'rate_limited' });
        }
        const timing = res.getHeader('Server-Timing');
        if (typeof timing === 'string') {
          for (const [stage, ms] of parseServerTiming(timing)) {
            this.stages.observe({ stage }, ms / 1000);
          }
        }
      };
      res.once('finish', observe);
      res.once('close', observe);
      next();
    };
  }
}

/** The metrics listener: GET /metrics, nothing else. Resolves once listening. */
export async function startMetricsServer(
  metrics: ServerMetrics,
  host: string,
  port: number,
): Promise<{ server: http.Server; address: AddressInfo }> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'Content-Type': metrics.registry.contentType }).end(text),
      () => res.writeHead(500, { 'Content-Type': 'text/plain' }).end('metrics failed\n'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { server, address: server.address() as AddressInfo };
}
