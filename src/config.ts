/**
 * Server configuration: environment variables (plus an optional `.env` file), read once at
 * start-up into a typed, validated, deeply frozen object.
 *
 * Names and defaults follow SPEC.md's configuration table. Field names are the variable names
 * in camelCase (SERVER_PORT -> serverPort, MAX_UPLOAD_SIZE_MB -> maxUploadSizeMb), and units
 * are the ones the variable names state.
 *
 * `loadConfig` is pure: it reads only the env record and the runtime facts it is given, so
 * tests can build any configuration without touching process.env or a GPU.
 */
import type { AllocatorName } from './allocator';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { parse as parseDotenv } from 'dotenv';

/** A bad configuration value; the message names the variable and says what is wrong. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly variable: string,
    reason: string,
  ) {
    super(`${variable}: ${reason}`);
  }
}

/** Facts about the machine that decide device defaults (from the addon's runtimeInfo()). */
export interface RuntimeInfo {
  cudaDeviceCount: number;
  /** The malloc the process runs on (src/allocator.ts); absent: the system allocator. */
  allocator?: AllocatorName;
}

/** MEMORY_ALLOCATOR: what the process must run on; auto accepts whatever it got. */
export type MemoryAllocatorSetting = 'auto' | AllocatorName;
const MEMORY_ALLOCATORS: readonly MemoryAllocatorSetting[] = [
  'auto',
  'mimalloc',
  'jemalloc',
  'system',
];

export type LogLevelName = 'DEBUG' | 'INFO' | 'WARNING' | 'ERROR' | 'CRITICAL';

export interface Config {
  serverHost: string;
  serverPort: number;
  logLevel: LogLevelName;
  memoryAllocator: MemoryAllocatorSetting;
  /** NODE_ENV; "production" forces JSON log lines. */
  nodeEnv: string;

  /** Directory of the exported model bundle (relative paths resolve against the cwd). */
  sam3Checkpoint: string;
  /** CLIP BPE vocabulary; null means the vocabulary shipped in the bundle. */
  sam3BpePath: string | null;

  /** "cpu" or "cuda:N" (a bare "cuda" is normalized to "cuda:0"). */
  imageModelDevice: string;
  /** Default score threshold, a probability in [0, 1]. */
  imageModelConfidenceThreshold: number;
  /**
   * Square model input side in pixels; null (unset) means the bundle's own. An explicit value
   * must equal the bundle's (a mismatch stops start-up).
   */
  imageModelResolution: number | null;
  imageModelEnabled: boolean;
  /**
   * Concurrent image requests on the device share vision encoder calls of up to this many
   * images (1: off). At most maxConcurrentRequests, the most that can encode at once.
   */
  imageModelBatchSize: number;
  /** How long the first image of a batch waits for others, ms (0 when batching is off). */
  imageModelBatchWaitMs: number;
  /** A failed image model load exits 1 (for a supervisor to restart) instead of degrading. */
  imageModelRequired: boolean;
  /**
   * The image device's engine runs the bundle's compiled vision trunk (an AOTInductor package,
   * tools/export_sam3.py --compile); a bundle without one stops start-up.
   */
  imageModelCompile: boolean;

  videoModelEnabled: boolean;
  videoModelRequired: boolean;
  /** CUDA device indices for video sessions (the default keeps those present). */
  videoGpuList: readonly number[];
  /**
   * Devices video sessions are placed on: "cuda:N" for each VIDEO_GPU_LIST index, or ["cpu"]
   * on a machine without CUDA (an explicit list naming an absent GPU is a start-up error).
   */
  videoDevices: readonly string[];
  /** The video devices' engines run the compiled vision trunk, as imageModelCompile. */
  videoModelCompile: boolean;
  maxConcurrentSessions: number;
  /** Image model requests in progress at once (decode to answer); beyond: the queue. */
  maxConcurrentRequests: number;
  /** Image model requests waiting for a place; beyond: 429 `overloaded`. */
  maxQueuedRequests: number;
  sessionTimeoutSeconds: number;
  /** Directories `video_path` may point into (checked after resolving symlinks). */
  videoPathRoots: readonly string[];
  /** Probe limits, checked before any frame is decoded: frames, pixels per frame, seconds. */
  videoMaxFrames: number;
  videoMaxPixels: number;
  videoMaxDurationSeconds: number;
  /** Decoded frames a session keeps in memory (its sliding window). */
  videoFrameWindow: number;
  /** Non-conditioning frames of memory the tracker keeps per object (least recent evicted). */
  videoMemoryFrames: number;
  /** Objects one session may track (clicked ones; text concepts drop detections beyond it). */
  videoMaxObjects: number;
  /**
   * Concept tracking post-processes as the official SAM3 (mask NMS, hole filling, sprinkle
   * removal); false: as transformers without its kernels (parity tests).
   */
  videoOfficialPostprocess: boolean;
  /** video_url downloads: whole-download deadline, seconds, and redirects followed. */
  videoUrlTimeoutSeconds: number;
  videoUrlMaxRedirects: number;
  /**
   * Addresses ("ip" or "ip:port") exempt from the private/loopback ban of video_url, for test
   * fixtures and trusted internal hosts. Empty by default.
   */
  videoUrlAllowedAddresses: readonly string[];
  /** A WebSocket client that lets more than this many MiB queue unsent is disconnected. */
  wsMaxBufferedMb: number;
  /** The ffmpeg and ffprobe executables (names looked up on PATH, or absolute paths). */
  ffmpegPath: string;
  ffprobePath: string;

  enableFeatureCache: boolean;
  featureCacheTtlSeconds: number;
  maxCacheSizeMb: number;

  requireApiKey: boolean;
  apiKeys: readonly string[];
  corsOriginsList: readonly string[];
  rateLimitEnabled: boolean;
  /** Requests a client may make per rate-limit window (the window is a minute by default). */
  rateLimitRequestsPerMinute: number;
  /** Length of the rate-limit window, whole seconds (60 by default; shorter for tests). */
  rateLimitWindowSeconds: number;

  uploadDir: string;
  outputDir: string;
  /** Most visualization PNGs kept under OUTPUT_DIR; the oldest beyond it are deleted. */
  outputMaxFiles: number;
  /** Visualization PNGs older than this are deleted, seconds. */
  outputMaxAgeSeconds: number;
  /** Bytes all visualization PNGs together may take; the oldest beyond it are deleted. */
  outputMaxBytes: number;
  /** A visualization PNG larger than this is not stored (at most outputMaxBytes). */
  outputMaxFileBytes: number;
  maxUploadSizeMb: number;

  enableMetrics: boolean;
  /** Address of the metrics listener (loopback by default: metrics are not for clients). */
  metricsHost: string;
  metricsPort: number;

  /** Reverse-proxy hops whose X-Forwarded-For is trusted (Express `trust proxy`); never `true`. */
  trustProxyHops: number;
  /** Largest decoded image, width x height in pixels (pixel-flood guard, sharp limitInputPixels). */
  maxImagePixels: number;
  /** Largest JSON request body, MiB (defaults to MAX_UPLOAD_SIZE_MB). */
  maxJsonBodyMb: number;
  /** Time allowed to receive a whole request (Node's server.requestTimeout), seconds. */
  requestTimeoutSeconds: number;
  /** Open client connections the HTTP server keeps at once; 0: no cap. */
  maxConnections: number;
  /** Open connections one client address may hold at once; 0: no cap (behind a proxy). */
  maxConnectionsPerAddress: number;
  /** On SIGTERM/SIGINT, how long in-flight requests may run before sockets are closed, seconds. */
  shutdownTimeoutSeconds: number;
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS: readonly LogLevelName[] = ['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'];
const TRUE_WORDS = new Set(['true', '1', 'yes']);
const FALSE_WORDS = new Set(['false', '0', 'no']);
const DEVICE_PATTERN = /^(cpu|cuda(?::(\d{1,3}))?)$/;
const MAX_PORT = 65535;

/** Reads one variable; an empty or blank value counts as unset (so `VAR=` in .env means default). */
function raw(env: Env, name: string): string | undefined {
  const value = env[name];
  if (value === undefined || value.trim() === '') return undefined;
  return value.trim();
}

function parseBool(env: Env, name: string, fallback: boolean): boolean {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  const word = value.toLowerCase();
  if (TRUE_WORDS.has(word)) return true;
  if (FALSE_WORDS.has(word)) return false;
  throw new ConfigError(name, `expected true/false/1/0/yes/no, got "${value}"`);
}

interface NumberRange {
  /** Strictly greater than zero. */
  positive?: boolean;
  min?: number;
  max?: number;
  integer?: boolean;
}

function checkNumber(name: string, text: string, range: NumberRange): number {
  // Number('') and Number(' ') are 0 and Number('0x10') is 16: accept plain decimals only.
  if (!/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/.test(text)) {
    throw new ConfigError(name, `expected a number, got "${text}"`);
  }
  const value = Number(text);
  if (!Number.isFinite(value))
    throw new ConfigError(name, `expected a finite number, got "${text}"`);
  if (range.integer && !Number.isInteger(value)) {
    throw new ConfigError(name, `expected an integer, got "${text}"`);
  }
  if (range.positive && value <= 0) throw new ConfigError(name, `must be > 0, got ${value}`);
  if (range.min !== undefined && value < range.min) {
    throw new ConfigError(name, `must be >= ${range.min}, got ${value}`);
  }
  if (range.max !== undefined && value > range.max) {
    throw new ConfigError(name, `must be <= ${range.max}, got ${value}`);
  }
  return value;
}

function parseNumber(env: Env, name: string, fallback: number, range: NumberRange): number {
  const value = raw(env, name);
  return value === undefined ? fallback : checkNumber(name, value, range);
}

function parseString(env: Env, name: string, fallback: string): string {
  return raw(env, name) ?? fallback;
}

/** A list: JSON array (`[0,1]`, `["a","b"]`) or comma-separated values (`0,1`, `a, b`). */
function parseListItems(env: Env, name: string): string[] | undefined {
  const value = raw(env, name);
  if (value === undefined) return undefined;
  if (value.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      throw new ConfigError(name, `starts with "[" but is not a valid JSON array`);
    }
    if (!Array.isArray(parsed)) throw new ConfigError(name, 'expected a JSON array');
    return parsed.map((item, index) => {
      if (typeof item === 'string') return item.trim();
      if (typeof item === 'number') return String(item);
      throw new ConfigError(name, `item ${index} must be a string or a number`);
    });
  }
  return value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

function parseStringList(env: Env, name: string, fallback: readonly string[]): string[] {
  const items = parseListItems(env, name);
  if (items === undefined) return [...fallback];
  items.forEach((item, index) => {
    if (item === '') throw new ConfigError(name, `item ${index} is empty`);
  });
  return items;
}

function parseIntegerList(
  env: Env,
  name: string,
  fallback: readonly number[],
  range: NumberRange,
): number[] {
  const items = parseListItems(env, name);
  if (items === undefined) return [...fallback];
  return items.map((item) => checkNumber(name, item, { ...range, integer: true }));
}

// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
const HOSTNAME_PATTERN =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** A listen address: an IPv4/IPv6 address or a host name (no scheme, port or brackets). */
function parseHost(env: Env, name: string, fallback: string): string {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  if (isIP(value) === 0 && !HOSTNAME_PATTERN.test(value)) {
    throw new ConfigError(name, `expected an IP address or a host name, got "${value}"`);
  }
  return value;
}

/**
 * Variables kept for compatibility with the original specification that this server cannot
 * honour: only their inert value is accepted, so a setting never silently does nothing.
 */
function refuseUnsupported(env: Env): void {
  const workers = parseNumber(env, 'SERVER_WORKERS', 1, { integer: true });
  if (workers !== 1) {
    throw new ConfigError(
      'SERVER_WORKERS',
      `must be 1, got ${workers}: one process owns the devices (their memory and the video ` +
        'sessions live in it). To scale out, run one server per GPU box or per GPU ' +
        '(IMAGE_MODEL_DEVICE, VIDEO_GPU_LIST) behind a load balancer, with session affinity ' +
        'for video',
    );
  }
  if (parseBool(env, 'RELOAD', false)) {
    throw new ConfigError(
      'RELOAD',
      'auto-restart is not built into the server; for development run `npm run dev` ' +
        '(node --watch dist/src/main.js: it restarts whenever `npm run build:ts` rewrites dist/)',
    );
  }
}

/**
 * IMAGE_MODEL_COMPILE and VIDEO_MODEL_COMPILE: refused true for a model that is off. One
 * engine serves a device, so where the image model and video share one the two must agree.
 */
function parseCompile(
  env: Env,
  imageDevice: string | null,
  videoDevices: readonly string[] | null,
): { image: boolean; video: boolean } {
  const image = parseBool(env, 'IMAGE_MODEL_COMPILE', false);
  const video = parseBool(env, 'VIDEO_MODEL_COMPILE', false);
  if (image && imageDevice === null) {
    throw new ConfigError('IMAGE_MODEL_COMPILE', 'is true but IMAGE_MODEL_ENABLED is false');
  }
  if (video && videoDevices === null) {
    throw new ConfigError('VIDEO_MODEL_COMPILE', 'is true but VIDEO_MODEL_ENABLED is false');
  }
  if (image !== video && imageDevice !== null && videoDevices?.includes(imageDevice) === true) {
    throw new ConfigError(
      image ? 'VIDEO_MODEL_COMPILE' : 'IMAGE_MODEL_COMPILE',
      `is false but ${image ? 'IMAGE' : 'VIDEO'}_MODEL_COMPILE is true, and images and ` +
        `video share ${imageDevice}, whose one engine runs the compiled vision trunk or not: ` +
        'set both alike',
    );
  }
  return { image, video };
}

/** Largest IMAGE_MODEL_BATCH_SIZE and IMAGE_MODEL_BATCH_WAIT_MS (the native engine's bounds). */
const MAX_IMAGE_BATCH = 64;
const MAX_IMAGE_BATCH_WAIT_MS = 1000;
const DEFAULT_IMAGE_BATCH_WAIT_MS = 2;

/** IMAGE_MODEL_BATCH_SIZE and IMAGE_MODEL_BATCH_WAIT_MS. */
function parseImageBatching(
  env: Env,
  maxConcurrentRequests: number,
): { size: number; waitMs: number } {
  const size = parseNumber(env, 'IMAGE_MODEL_BATCH_SIZE', 1, {
    min: 1,
    max: MAX_IMAGE_BATCH,
    integer: true,
  });
  if (size > maxConcurrentRequests) {
    throw new ConfigError(
      'IMAGE_MODEL_BATCH_SIZE',
      `is ${size} but MAX_CONCURRENT_REQUESTS is ${maxConcurrentRequests}: no more images than ` +
        'that can wait for one batch, so a larger batch would never fill',
    );
  }
  if (size === 1) {
    if (raw(env, 'IMAGE_MODEL_BATCH_WAIT_MS') !== undefined) {
      throw new ConfigError(
        'IMAGE_MODEL_BATCH_WAIT_MS',
        'is set but IMAGE_MODEL_BATCH_SIZE is 1 (batching off): set a batch size above 1, or ' +
          'unset it',
      );
    }
    return { size, waitMs: 0 };
  }
  const waitMs = parseNumber(env, 'IMAGE_MODEL_BATCH_WAIT_MS', DEFAULT_IMAGE_BATCH_WAIT_MS, {
    min: 0,
    max: MAX_IMAGE_BATCH_WAIT_MS,
    integer: true,
  });
  return { size, waitMs };
}

/**
 * MEMORY_ALLOCATOR. An allocator is chosen before the process starts (scripts/start.sh
 * preloads it); a setting the running process does not match is refused, saying how to start.
 */
function parseMemoryAllocator(env: Env, runtime: RuntimeInfo): MemoryAllocatorSetting {
  const value = raw(env, 'MEMORY_ALLOCATOR');
  if (value === undefined) return 'auto';
  const setting = MEMORY_ALLOCATORS.find((candidate) => candidate === value.toLowerCase());
  if (setting === undefined) {
    throw new ConfigError(
      'MEMORY_ALLOCATOR',
      `expected one of ${MEMORY_ALLOCATORS.join(', ')}, got "${value}"`,
    );
  }
  const active = runtime.allocator ?? 'system';
  if (setting !== 'auto' && setting !== active) {
    throw new ConfigError(
      'MEMORY_ALLOCATOR',
      `is ${setting} but the process runs on ${active === 'system' ? 'the system allocator' : active}: ` +
        'start the server with npm start (scripts/start.sh preloads the allocator named in ' +
        'the environment), or set LD_PRELOAD to its library yourself',
    );
  }
  return setting;
}

function parseLogLevel(env: Env): LogLevelName {
  const value = raw(env, 'LOG_LEVEL');
  if (value === undefined) return 'INFO';
  const upper = value.toUpperCase();
  const level = LOG_LEVELS.find((candidate) => candidate === upper);
  if (level === undefined) {
    throw new ConfigError('LOG_LEVEL', `expected one of ${LOG_LEVELS.join(', ')}, got "${value}"`);
  }
  return level;
}

/** "cpu" | "cuda" | "cuda:N"; the default cuda:0 becomes cpu on a machine without CUDA. */
function parseImageDevice(env: Env, runtime: RuntimeInfo): string {
  const value = raw(env, 'IMAGE_MODEL_DEVICE');
  if (value === undefined) return runtime.cudaDeviceCount > 0 ? 'cuda:0' : 'cpu';
  const match = DEVICE_PATTERN.exec(value.toLowerCase());
  if (match === null) {
    throw new ConfigError('IMAGE_MODEL_DEVICE', `expected "cpu" or "cuda:N", got "${value}"`);
  }
  if (match[1] === 'cpu') return 'cpu';
  const index = Number(match[2] ?? '0');
  if (index >= runtime.cudaDeviceCount) {
    throw new ConfigError(
      'IMAGE_MODEL_DEVICE',
      `names cuda:${index} but ${runtime.cudaDeviceCount} CUDA device(s) are present`,
    );
  }
  return `cuda:${index}`;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}

/** Builds the configuration from `env`; throws ConfigError on the first bad variable. */
export function loadConfig(env: Env, runtime: RuntimeInfo): Readonly<Config> {
  refuseUnsupported(env);
  const maxUploadSizeMb = parseNumber(env, 'MAX_UPLOAD_SIZE_MB', 100, { positive: true });
  const requireApiKey = parseBool(env, 'REQUIRE_API_KEY', false);
  const apiKeys = parseStringList(env, 'API_KEYS', []);
  if (requireApiKey && apiKeys.length === 0) {
    throw new ConfigError('API_KEYS', 'REQUIRE_API_KEY is true but API_KEYS is empty');
  }
  // A key travels in an HTTP header, which carries printable ASCII only (browsers refuse
  // anything else before sending); the key itself is never part of the message.
  const unsendable = apiKeys.findIndex((key) => !/^[\x20-\x7e]+$/.test(key));
  if (unsendable >= 0) {
    throw new ConfigError(
      'API_KEYS',
      `item ${unsendable} holds characters an HTTP header cannot carry (printable ASCII only)`,
    );
  }
  const trustProxyHops = parseNumber(env, 'TRUST_PROXY_HOPS', 0, {
    min: 0,
    max: 32,
    integer: true,
  });
  const outputMaxBytes = parseNumber(env, 'OUTPUT_MAX_BYTES', 1024 ** 3, {
    min: 1,
    max: Number.MAX_SAFE_INTEGER,
    integer: true,
  });
  const outputMaxFileBytes = parseNumber(
    env,
    'OUTPUT_MAX_FILE_BYTES',
    Math.min(64 * 1024 ** 2, outputMaxBytes),
    { min: 1, integer: true },
  );
  if (outputMaxFileBytes > outputMaxBytes) {
    throw new ConfigError(
      'OUTPUT_MAX_FILE_BYTES',
      `is ${outputMaxFileBytes}, more than OUTPUT_MAX_BYTES (${outputMaxBytes})`,
    );
  }
  const presentGpus = Array.from({ length: runtime.cudaDeviceCount }, (_, index) => index);
  const videoGpuList = parseIntegerList(env, 'VIDEO_GPU_LIST', presentGpus.slice(0, 4), {
    min: 0,
  });
  for (const index of videoGpuList) {
    if (index >= runtime.cudaDeviceCount) {
      throw new ConfigError(
        'VIDEO_GPU_LIST',
        `names GPU ${index} but ${runtime.cudaDeviceCount} CUDA device(s) are present`,
      );
    }
  }
  const uploadDir = parseString(env, 'UPLOAD_DIR', '/tmp/sam3_uploads');
  const imageModelEnabled = parseBool(env, 'IMAGE_MODEL_ENABLED', true);
  const imageModelRequired = parseBool(env, 'IMAGE_MODEL_REQUIRED', false);
  if (imageModelRequired && !imageModelEnabled) {
    throw new ConfigError('IMAGE_MODEL_REQUIRED', 'is true but IMAGE_MODEL_ENABLED is false');
  }
  const imageModelResolution = raw(env, 'IMAGE_MODEL_RESOLUTION');
  const maxConcurrentRequests = parseNumber(env, 'MAX_CONCURRENT_REQUESTS', 4, {
    min: 1,
    integer: true,
  });
  const imageBatching = parseImageBatching(env, maxConcurrentRequests);
  const imageModelDevice = parseImageDevice(env, runtime);
  const videoModelEnabled = parseBool(env, 'VIDEO_MODEL_ENABLED', true);
  const videoDevices =
    videoGpuList.length > 0 ? videoGpuList.map((index) => `cuda:${index}`) : ['cpu'];
  const compile = parseCompile(
    env,
    imageModelEnabled ? imageModelDevice : null,
    videoModelEnabled ? videoDevices : null,
  );

  const config: Config = {
    serverHost: parseHost(env, 'SERVER_HOST', '0.0.0.0'),
    serverPort: parseNumber(env, 'SERVER_PORT', 8000, { min: 0, max: MAX_PORT, integer: true }),
    logLevel: parseLogLevel(env),
    memoryAllocator: parseMemoryAllocator(env, runtime),
    nodeEnv: parseString(env, 'NODE_ENV', 'development'),

    sam3Checkpoint: parseString(env, 'SAM3_CHECKPOINT', 'weights/sam3'),
    sam3BpePath: raw(env, 'SAM3_BPE_PATH') ?? null,

    imageModelDevice,
    imageModelConfidenceThreshold: parseNumber(env, 'IMAGE_MODEL_CONFIDENCE_THRESHOLD', 0.5, {
      min: 0,
      max: 1,
    }),
    imageModelResolution:
      imageModelResolution === undefined
        ? null
        : checkNumber('IMAGE_MODEL_RESOLUTION', imageModelResolution, { min: 1, integer: true }),
    imageModelEnabled,
    imageModelBatchSize: imageBatching.size,
    imageModelBatchWaitMs: imageBatching.waitMs,
    imageModelRequired,
    imageModelCompile: compile.image,

    videoModelEnabled,
    videoModelRequired: parseBool(env, 'VIDEO_MODEL_REQUIRED', false),
    // The spec's default [0,1,2,3] means "up to four GPUs, those present".
    videoGpuList,
    videoDevices,
    videoModelCompile: compile.video,
    maxConcurrentRequests,
    maxQueuedRequests: parseNumber(env, 'MAX_QUEUED_REQUESTS', 16, { min: 0, integer: true }),
    maxConcurrentSessions: parseNumber(env, 'MAX_CONCURRENT_SESSIONS', 10, {
      min: 1,
      integer: true,
    }),
    sessionTimeoutSeconds: parseNumber(env, 'SESSION_TIMEOUT_SECONDS', 3600, { positive: true }),
    videoPathRoots: parseStringList(env, 'VIDEO_PATH_ROOTS', [uploadDir]),
    videoMaxFrames: parseNumber(env, 'VIDEO_MAX_FRAMES', 100_000, { min: 1, integer: true }),
    videoMaxPixels: parseNumber(env, 'VIDEO_MAX_PIXELS', 3840 * 2160, { min: 1, integer: true }),
    videoMaxDurationSeconds: parseNumber(env, 'VIDEO_MAX_DURATION_SECONDS', 3600, {
      positive: true,
    }),
    videoFrameWindow: parseNumber(env, 'VIDEO_FRAME_WINDOW', 16, {
      min: 1,
      max: 4096,
      integer: true,
    }),
    videoMemoryFrames: parseNumber(env, 'VIDEO_MEMORY_FRAMES', 64, {
      min: 16,
      max: 100_000,
      integer: true,
    }),
    videoMaxObjects: parseNumber(env, 'VIDEO_MAX_OBJECTS', 32, {
      min: 1,
      max: 1024,
      integer: true,
    }),
    videoOfficialPostprocess: parseBool(env, 'VIDEO_OFFICIAL_POSTPROCESS', true),
    videoUrlTimeoutSeconds: parseNumber(env, 'VIDEO_URL_TIMEOUT_SECONDS', 30, { positive: true }),
    videoUrlMaxRedirects: parseNumber(env, 'VIDEO_URL_MAX_REDIRECTS', 3, {
      min: 0,
      max: 20,
      integer: true,
    }),
    videoUrlAllowedAddresses: parseStringList(env, 'VIDEO_URL_ALLOWED_ADDRESSES', []),
    wsMaxBufferedMb: parseNumber(env, 'WS_MAX_BUFFERED_MB', 16, { positive: true }),
    ffmpegPath: parseString(env, 'FFMPEG_PATH', 'ffmpeg'),
    ffprobePath: parseString(env, 'FFPROBE_PATH', 'ffprobe'),

    enableFeatureCache: parseBool(env, 'ENABLE_FEATURE_CACHE', true),
    featureCacheTtlSeconds: parseNumber(env, 'FEATURE_CACHE_TTL_SECONDS', 600, { min: 0 }),
    maxCacheSizeMb: parseNumber(env, 'MAX_CACHE_SIZE_MB', 4096, { min: 0 }),

    requireApiKey,
    apiKeys,
    corsOriginsList: parseStringList(env, 'CORS_ORIGINS_LIST', []),
    rateLimitEnabled: parseBool(env, 'RATE_LIMIT_ENABLED', true),
    rateLimitRequestsPerMinute: parseNumber(env, 'RATE_LIMIT_REQUESTS_PER_MINUTE', 100, {
      min: 1,
      integer: true,
    }),
    rateLimitWindowSeconds: parseNumber(env, 'RATE_LIMIT_WINDOW_SECONDS', 60, {
      min: 1,
      max: 86_400,
      integer: true,
    }),

    uploadDir,
    outputDir: parseString(env, 'OUTPUT_DIR', '/tmp/sam3_outputs'),
    outputMaxFiles: parseNumber(env, 'OUTPUT_MAX_FILES', 1000, { min: 1, integer: true }),
    outputMaxAgeSeconds: parseNumber(env, 'OUTPUT_MAX_AGE_SECONDS', 3600, { positive: true }),
    outputMaxBytes,
    outputMaxFileBytes,
    maxUploadSizeMb,

    enableMetrics: parseBool(env, 'ENABLE_METRICS', false),
    metricsHost: parseHost(env, 'METRICS_HOST', '127.0.0.1'),
    metricsPort: parseNumber(env, 'METRICS_PORT', 9090, { min: 0, max: MAX_PORT, integer: true }),

    trustProxyHops,
    maxImagePixels: parseNumber(env, 'MAX_IMAGE_PIXELS', 40_000_000, { min: 1, integer: true }),
    maxJsonBodyMb: parseNumber(env, 'MAX_JSON_BODY_MB', maxUploadSizeMb, { positive: true }),
    requestTimeoutSeconds: parseNumber(env, 'REQUEST_TIMEOUT_SECONDS', 300, { min: 1 }),
    maxConnections: parseNumber(env, 'MAX_CONNECTIONS', 1024, { min: 0, integer: true }),
    // Behind proxies every connection comes from a proxy: no per-address cap unless set.
    maxConnectionsPerAddress: parseNumber(
      env,
      'MAX_CONNECTIONS_PER_ADDRESS',
      trustProxyHops > 0 ? 0 : 64,
      {
        min: 0,
        integer: true,
      },
    ),
    shutdownTimeoutSeconds: parseNumber(env, 'SHUTDOWN_TIMEOUT_SECONDS', 30, { min: 0 }),
  };
  return deepFreeze(config);
}

/**
 * The environment the server reads: `process.env` over the variables of a `.env` file (a real
 * environment variable always wins). A missing file is not an error.
 */
export async function readEnvironment(
  processEnv: Env,
  dotenvPath: string,
): Promise<Record<string, string | undefined>> {
  let fileText: string;
  try {
    fileText = await readFile(dotenvPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { ...processEnv };
    throw error;
  }
  return { ...parseDotenv(fileText), ...processEnv };
}
