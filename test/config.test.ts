import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, readEnvironment } from '../src/config';

const NO_GPU = { cudaDeviceCount: 0 };
const TWO_GPUS = { cudaDeviceCount: 2 };

function configError(env: Record<string, string>, runtime = NO_GPU): ConfigError {
  try {
    loadConfig(env, runtime);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected ConfigError for ${JSON.stringify(env)}`);
}

describe('loadConfig defaults', () => {
  it('uses the spec defaults when nothing is set', () => {
    const config = loadConfig({}, NO_GPU);
    assert.deepEqual(
      { ...config },
      {
        serverHost: '0.0.0.0',
        serverPort: 8000,
        logLevel: 'INFO',
        nodeEnv: 'development',
        sam3Checkpoint: 'weights/sam3',
        sam3BpePath: null,
        imageModelDevice: 'cpu',
        imageModelConfidenceThreshold: 0.5,
        imageModelResolution: null,
        imageModelEnabled: true,
        imageModelBatchSize: 1,
        imageModelBatchWaitMs: 0,
        imageModelRequired: false,
        imageModelCompile: false,
        videoModelEnabled: true,
        videoModelRequired: false,
        videoGpuList: [],
        videoDevices: ['cpu'],
        videoModelCompile: false,
        maxConcurrentRequests: 4,
        maxQueuedRequests: 16,
        maxConcurrentSessions: 10,
        sessionTimeoutSeconds: 3600,
        videoPathRoots: ['/tmp/sam3_uploads'],
        videoMaxFrames: 100_000,
        videoMaxPixels: 3840 * 2160,
        videoMaxDurationSeconds: 3600,
        videoFrameWindow: 16,
        videoMemoryFrames: 64,
        videoMaxObjects: 32,
        videoOfficialPostprocess: true,
        videoUrlTimeoutSeconds: 30,
        videoUrlMaxRedirects: 3,
        videoUrlAllowedAddresses: [],
        wsMaxBufferedMb: 16,
        ffmpegPath: 'ffmpeg',
        ffprobePath: 'ffprobe',
        enableFeatureCache: true,
        featureCacheTtlSeconds: 600,
        maxCacheSizeMb: 4096,
        requireApiKey: false,
        apiKeys: [],
        corsOriginsList: [],
        rateLimitEnabled: true,
        rateLimitRequestsPerMinute: 100,
        rateLimitWindowSeconds: 60,
        uploadDir: '/tmp/sam3_uploads',
        outputDir: '/tmp/sam3_outputs',
        outputMaxFiles: 1000,
        outputMaxAgeSeconds: 3600,
        outputMaxBytes: 1024 ** 3,
        outputMaxFileBytes: 64 * 1024 ** 2,
        maxUploadSizeMb: 100,
        memoryAllocator: 'auto',
        enableMetrics: false,
        metricsHost: '127.0.0.1',
        metricsPort: 9090,
        trustProxyHops: 0,
        maxImagePixels: 40_000_000,
        maxJsonBodyMb: 100,
        requestTimeoutSeconds: 300,
        maxConnections: 1024,
        maxConnectionsPerAddress: 64,
        shutdownTimeoutSeconds: 30,
      },
    );
  });

  it('defaults the image device to cuda:0 and video GPUs to those present when CUDA exists', () => {
    const config = loadConfig({}, TWO_GPUS);
    assert.equal(config.imageModelDevice, 'cuda:0');
    assert.deepEqual(config.videoGpuList, [0, 1]);
    assert.deepEqual(config.videoDevices, ['cuda:0', 'cuda:1']);
  });

  it('refuses a VIDEO_GPU_LIST naming an absent GPU', () => {
    assert.throws(
      () => loadConfig({ VIDEO_GPU_LIST: '0,2' }, TWO_GPUS),
      /VIDEO_GPU_LIST: names GPU 2/,
    );
  });

  it('defaults VIDEO_PATH_ROOTS to UPLOAD_DIR', () => {
    assert.deepEqual(loadConfig({ UPLOAD_DIR: '/srv/up' }, NO_GPU).videoPathRoots, ['/srv/up']);
  });

  it('keeps at most the four default video GPUs', () => {
    assert.deepEqual(loadConfig({}, { cudaDeviceCount: 8 }).videoGpuList, [0, 1, 2, 3]);
  });

  it('defaults MAX_CONNECTIONS_PER_ADDRESS to no cap behind proxies, unless it is set', () => {
    assert.equal(loadConfig({}, NO_GPU).maxConnectionsPerAddress, 64);
    assert.equal(loadConfig({ TRUST_PROXY_HOPS: '1' }, NO_GPU).maxConnectionsPerAddress, 0);
    const set = { TRUST_PROXY_HOPS: '1', MAX_CONNECTIONS_PER_ADDRESS: '8' };
    assert.equal(loadConfig(set, NO_GPU).maxConnectionsPerAddress, 8);
  });

  it('defaults MAX_JSON_BODY_MB to MAX_UPLOAD_SIZE_MB', () => {
    assert.equal(loadConfig({ MAX_UPLOAD_SIZE_MB: '12.5' }, NO_GPU).maxJsonBodyMb, 12.5);
    const both = loadConfig({ MAX_UPLOAD_SIZE_MB: '12', MAX_JSON_BODY_MB: '3' }, NO_GPU);
    assert.equal(both.maxJsonBodyMb, 3);
  });

  it('treats an empty value as unset', () => {
    const config = loadConfig({ SERVER_PORT: '', SAM3_BPE_PATH: '  ', API_KEYS: '' }, NO_GPU);
    assert.equal(config.serverPort, 8000);
    assert.equal(config.sam3BpePath, null);
    assert.deepEqual(config.apiKeys, []);
  });
});

describe('loadConfig parsing', () => {
  it('parses booleans in every accepted spelling, case-insensitively', () => {
    for (const word of ['true', 'TRUE', '1', 'yes', 'Yes']) {
      assert.equal(loadConfig({ VIDEO_MODEL_REQUIRED: word }, NO_GPU).videoModelRequired, true);
    }
    for (const word of ['false', 'False', '0', 'no', 'NO']) {
      assert.equal(loadConfig({ IMAGE_MODEL_ENABLED: word }, NO_GPU).imageModelEnabled, false);
    }
  });

  it('parses lists as JSON arrays or comma-separated values', () => {
    const json = loadConfig({ VIDEO_GPU_LIST: '[0, 1]', API_KEYS: '["a b", "c"]' }, TWO_GPUS);
    assert.deepEqual(json.videoGpuList, [0, 1]);
    assert.deepEqual(json.apiKeys, ['a b', 'c']);
    const csv = loadConfig(
      { VIDEO_GPU_LIST: '1, 0', CORS_ORIGINS_LIST: 'https://a.example, https://b.example' },
      TWO_GPUS,
    );
    assert.deepEqual(csv.videoGpuList, [1, 0]);
    assert.deepEqual(csv.corsOriginsList, ['https://a.example', 'https://b.example']);
  });

  it('parses numbers and log levels', () => {
    const config = loadConfig(
      {
        SERVER_PORT: '9000',
        IMAGE_MODEL_CONFIDENCE_THRESHOLD: '0.25',
        IMAGE_MODEL_RESOLUTION: '224',
        LOG_LEVEL: 'warning',
        TRUST_PROXY_HOPS: '2',
        MAX_IMAGE_PIXELS: '1000000',
      },
      NO_GPU,
    );
    assert.equal(config.serverPort, 9000);
    assert.equal(config.imageModelConfidenceThreshold, 0.25);
    assert.equal(config.imageModelResolution, 224);
    assert.equal(config.logLevel, 'WARNING');
    assert.equal(config.trustProxyHops, 2);
    assert.equal(config.maxImagePixels, 1_000_000);
  });

  it('parses the rate-limit window in whole seconds', () => {
    const config = loadConfig(
      { RATE_LIMIT_WINDOW_SECONDS: '2', RATE_LIMIT_REQUESTS_PER_MINUTE: '3' },
      NO_GPU,
    );
    assert.equal(config.rateLimitWindowSeconds, 2);
    assert.equal(config.rateLimitRequestsPerMinute, 3);
    assert.equal(
      loadConfig({ RATE_LIMIT_WINDOW_SECONDS: '86400' }, NO_GPU).rateLimitWindowSeconds,
      86_400,
    );
  });

  it('normalizes a bare "cuda" device to cuda:0 and accepts cpu on a GPU machine', () => {
    assert.equal(loadConfig({ IMAGE_MODEL_DEVICE: 'cuda' }, TWO_GPUS).imageModelDevice, 'cuda:0');
    assert.equal(loadConfig({ IMAGE_MODEL_DEVICE: 'cuda:1' }, TWO_GPUS).imageModelDevice, 'cuda:1');
    assert.equal(loadConfig({ IMAGE_MODEL_DEVICE: 'CPU' }, TWO_GPUS).imageModelDevice, 'cpu');
  });

  it('reads dotenv text under the real environment, which wins', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'sam3-config-'));
    try {
      const file = path.join(dir, '.env');
      await writeFile(file, 'SERVER_PORT=9100\nLOG_LEVEL=DEBUG\n# comment\nAPI_KEYS="k1,k2"\n');
      const env = await readEnvironment({ SERVER_PORT: '9200' }, file);
      const config = loadConfig(env, NO_GPU);
      assert.equal(config.serverPort, 9200);
      assert.equal(config.logLevel, 'DEBUG');
      assert.deepEqual(config.apiKeys, ['k1', 'k2']);
      assert.deepEqual(await readEnvironment({ A: '1' }, path.join(dir, 'missing.env')), {
        A: '1',
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('returns a deeply frozen object', () => {
    const config = loadConfig({ API_KEYS: 'a,b' }, NO_GPU);
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.apiKeys));
    assert.throws(() => {
      (config.apiKeys as string[]).push('c');
    }, TypeError);
  });
});

describe('loadConfig errors name the variable', () => {
  const cases: [Record<string, string>, string, RegExp][] = [
    [{ SERVER_PORT: 'eighty' }, 'SERVER_PORT', /expected a number/],
    [{ SERVER_PORT: '70000' }, 'SERVER_PORT', /<= 65535/],
    [{ SERVER_PORT: '80.5' }, 'SERVER_PORT', /integer/],
    [{ SERVER_PORT: '0x50' }, 'SERVER_PORT', /expected a number/],
    [{ SERVER_WORKERS: '0' }, 'SERVER_WORKERS', /must be 1, got 0/],
    [{ SERVER_WORKERS: 'two' }, 'SERVER_WORKERS', /expected a number/],
    [{ RELOAD: 'maybe' }, 'RELOAD', /true\/false/],
    [{ LOG_LEVEL: 'VERBOSE' }, 'LOG_LEVEL', /DEBUG, INFO, WARNING, ERROR, CRITICAL/],
    [{ IMAGE_MODEL_CONFIDENCE_THRESHOLD: '1.5' }, 'IMAGE_MODEL_CONFIDENCE_THRESHOLD', /<= 1/],
    [{ IMAGE_MODEL_CONFIDENCE_THRESHOLD: 'NaN' }, 'IMAGE_MODEL_CONFIDENCE_THRESHOLD', /number/],
    [{ IMAGE_MODEL_DEVICE: 'tpu:0' }, 'IMAGE_MODEL_DEVICE', /"cpu" or "cuda:N"/],
    [{ IMAGE_MODEL_DEVICE: 'cuda:0' }, 'IMAGE_MODEL_DEVICE', /0 CUDA device/],
    [{ VIDEO_GPU_LIST: '[0, "x"]' }, 'VIDEO_GPU_LIST', /expected a number/],
    [{ VIDEO_GPU_LIST: '[0, 1' }, 'VIDEO_GPU_LIST', /JSON array/],
    [{ VIDEO_GPU_LIST: '0,-1' }, 'VIDEO_GPU_LIST', />= 0/],
    [{ API_KEYS: '[{"k": 1}]' }, 'API_KEYS', /string or a number/],
    [{ REQUIRE_API_KEY: 'true' }, 'API_KEYS', /empty/],
    [{ MEMORY_ALLOCATOR: 'tcmalloc' }, 'MEMORY_ALLOCATOR', /auto, mimalloc, jemalloc, system/],
    [{ MEMORY_ALLOCATOR: 'jemalloc' }, 'MEMORY_ALLOCATOR', /is jemalloc but .* system allocator/],
    [{ API_KEYS: 'ok,clé' }, 'API_KEYS', /item 1 holds characters an HTTP header cannot carry/],
    [{ API_KEYS: '["ok", "tab\\there"]' }, 'API_KEYS', /item 1 .*\(printable ASCII only\)$/],
    [{ TRUST_PROXY_HOPS: 'true' }, 'TRUST_PROXY_HOPS', /expected a number/],
    [{ MAX_UPLOAD_SIZE_MB: '0' }, 'MAX_UPLOAD_SIZE_MB', /> 0/],
    [{ MAX_IMAGE_PIXELS: '-5' }, 'MAX_IMAGE_PIXELS', />= 1/],
    [{ REQUEST_TIMEOUT_SECONDS: 'Infinity' }, 'REQUEST_TIMEOUT_SECONDS', /number/],
    [{ MAX_CONCURRENT_REQUESTS: '0' }, 'MAX_CONCURRENT_REQUESTS', />= 1/],
    [{ MAX_CONCURRENT_REQUESTS: '2.5' }, 'MAX_CONCURRENT_REQUESTS', /integer/],
    [{ MAX_QUEUED_REQUESTS: '-1' }, 'MAX_QUEUED_REQUESTS', />= 0/],
    [{ OUTPUT_MAX_BYTES: '0' }, 'OUTPUT_MAX_BYTES', />= 1/],
    [
      { OUTPUT_MAX_BYTES: '1000', OUTPUT_MAX_FILE_BYTES: '2000' },
      'OUTPUT_MAX_FILE_BYTES',
      /is 2000, more than OUTPUT_MAX_BYTES \(1000\)/,
    ],
    [{ MAX_CONNECTIONS: '-1' }, 'MAX_CONNECTIONS', />= 0/],
    [{ MAX_CONNECTIONS: '10.5' }, 'MAX_CONNECTIONS', /integer/],
    [{ MAX_CONNECTIONS_PER_ADDRESS: 'many' }, 'MAX_CONNECTIONS_PER_ADDRESS', /expected a number/],
    [{ MAX_CONNECTIONS_PER_ADDRESS: '-2' }, 'MAX_CONNECTIONS_PER_ADDRESS', />= 0/],
    [{ RATE_LIMIT_WINDOW_SECONDS: '0' }, 'RATE_LIMIT_WINDOW_SECONDS', />= 1/],
    [{ RATE_LIMIT_WINDOW_SECONDS: '1.5' }, 'RATE_LIMIT_WINDOW_SECONDS', /integer/],
    [{ RATE_LIMIT_WINDOW_SECONDS: '86401' }, 'RATE_LIMIT_WINDOW_SECONDS', /<= 86400/],
    [{ RATE_LIMIT_WINDOW_SECONDS: 'minute' }, 'RATE_LIMIT_WINDOW_SECONDS', /expected a number/],
    [{ RATE_LIMIT_REQUESTS_PER_MINUTE: '0' }, 'RATE_LIMIT_REQUESTS_PER_MINUTE', />= 1/],
    [{ IMAGE_MODEL_RESOLUTION: '0' }, 'IMAGE_MODEL_RESOLUTION', />= 1/],
    [{ IMAGE_MODEL_RESOLUTION: '1008.5' }, 'IMAGE_MODEL_RESOLUTION', /integer/],
    [{ IMAGE_MODEL_COMPILE: 'fast' }, 'IMAGE_MODEL_COMPILE', /true\/false/],
    [{ IMAGE_MODEL_BATCH_SIZE: '0' }, 'IMAGE_MODEL_BATCH_SIZE', />= 1/],
    [{ IMAGE_MODEL_BATCH_SIZE: '2.5' }, 'IMAGE_MODEL_BATCH_SIZE', /integer/],
    [
      { IMAGE_MODEL_BATCH_SIZE: '65', MAX_CONCURRENT_REQUESTS: '100' },
      'IMAGE_MODEL_BATCH_SIZE',
      /<= 64/,
    ],
    [
      { IMAGE_MODEL_BATCH_SIZE: '8' },
      'IMAGE_MODEL_BATCH_SIZE',
      /is 8 but MAX_CONCURRENT_REQUESTS is 4: .* would never fill$/,
    ],
    [
      { IMAGE_MODEL_BATCH_WAIT_MS: '5' },
      'IMAGE_MODEL_BATCH_WAIT_MS',
      /is set but IMAGE_MODEL_BATCH_SIZE is 1 \(batching off\)/,
    ],
    [
      { IMAGE_MODEL_BATCH_SIZE: '4', IMAGE_MODEL_BATCH_WAIT_MS: '1001' },
      'IMAGE_MODEL_BATCH_WAIT_MS',
      /<= 1000/,
    ],
    [
      { IMAGE_MODEL_BATCH_SIZE: '4', IMAGE_MODEL_BATCH_WAIT_MS: '0.5' },
      'IMAGE_MODEL_BATCH_WAIT_MS',
      /integer/,
    ],
    [{ SERVER_HOST: 'http://0.0.0.0' }, 'SERVER_HOST', /IP address or a host name/],
    [{ METRICS_HOST: '127.0.0.1:9090' }, 'METRICS_HOST', /IP address or a host name/],
    [{ METRICS_HOST: '[::1]' }, 'METRICS_HOST', /IP address or a host name/],
    [{ METRICS_HOST: 'bad_host.example' }, 'METRICS_HOST', /IP address or a host name/],
    [{ METRICS_HOST: '-metrics' }, 'METRICS_HOST', /IP address or a host name/],
  ];
  for (const [env, variable, reason] of cases) {
    it(`${JSON.stringify(env)} -> ${variable}`, () => {
      const error = configError(env);
      assert.equal(error.variable, variable);
      assert.match(error.message, new RegExp(`^${variable}: `));
      assert.match(error.message, reason);
    });
  }
});

describe('variables the server cannot honour are refused, not ignored', () => {
  const refusals: [Record<string, string>, string, string][] = [
    [
      { SERVER_WORKERS: '4' },
      'SERVER_WORKERS',
      'SERVER_WORKERS: must be 1, got 4: one process owns the devices (their memory and the ' +
        'video sessions live in it). To scale out, run one server per GPU box or per GPU ' +
        '(IMAGE_MODEL_DEVICE, VIDEO_GPU_LIST) behind a load balancer, with session affinity ' +
        'for video',
    ],
    [
      { RELOAD: 'true' },
      'RELOAD',
      'RELOAD: auto-restart is not built into the server; for development run `npm run dev` ' +
        '(node --watch dist/src/main.js: it restarts whenever `npm run build:ts` rewrites dist/)',
    ],
    [
      { IMAGE_MODEL_COMPILE: 'yes' },
      'VIDEO_MODEL_COMPILE',
      'VIDEO_MODEL_COMPILE: is false but IMAGE_MODEL_COMPILE is true, and images and video ' +
        'share cpu, whose one engine runs the compiled vision trunk or not: set both alike',
    ],
    [
      { VIDEO_MODEL_COMPILE: '1' },
      'IMAGE_MODEL_COMPILE',
      'IMAGE_MODEL_COMPILE: is false but VIDEO_MODEL_COMPILE is true, and images and video ' +
        'share cpu, whose one engine runs the compiled vision trunk or not: set both alike',
    ],
    [
      { IMAGE_MODEL_COMPILE: 'true', VIDEO_MODEL_COMPILE: 'true', IMAGE_MODEL_ENABLED: 'false' },
      'IMAGE_MODEL_COMPILE',
      'IMAGE_MODEL_COMPILE: is true but IMAGE_MODEL_ENABLED is false',
    ],
    [
      { IMAGE_MODEL_COMPILE: 'true', VIDEO_MODEL_COMPILE: 'true', VIDEO_MODEL_ENABLED: 'false' },
      'VIDEO_MODEL_COMPILE',
      'VIDEO_MODEL_COMPILE: is true but VIDEO_MODEL_ENABLED is false',
    ],
    [
      { IMAGE_MODEL_REQUIRED: 'true', IMAGE_MODEL_ENABLED: 'false' },
      'IMAGE_MODEL_REQUIRED',
      'IMAGE_MODEL_REQUIRED: is true but IMAGE_MODEL_ENABLED is false',
    ],
  ];
  for (const [env, variable, message] of refusals) {
    it(`${JSON.stringify(env)} -> ${variable}`, () => {
      const error = configError(env);
      assert.equal(error.variable, variable);
      assert.equal(error.message, message);
    });
  }

  it('accepts their inert values, which leave nothing behind in the config', () => {
    for (const env of [
      { SERVER_WORKERS: '1', RELOAD: 'false' },
      { SERVER_WORKERS: '1.0', RELOAD: '0', IMAGE_MODEL_COMPILE: 'no', VIDEO_MODEL_COMPILE: 'NO' },
      { SERVER_WORKERS: '', RELOAD: '', IMAGE_MODEL_COMPILE: '', VIDEO_MODEL_COMPILE: '' },
    ]) {
      assert.deepEqual(loadConfig(env, NO_GPU), loadConfig({}, NO_GPU), JSON.stringify(env));
    }
  });
});

describe('loadConfig model and metrics settings', () => {
  it('IMAGE_MODEL_COMPILE / VIDEO_MODEL_COMPILE: off by default, alike where a device is shared', () => {
    const compile = (env: Record<string, string>, gpus = NO_GPU) => {
      const config = loadConfig(env, gpus);
      return [config.imageModelCompile, config.videoModelCompile];
    };
    assert.deepEqual(compile({}), [false, false]);
    assert.deepEqual(compile({ IMAGE_MODEL_COMPILE: 'false', VIDEO_MODEL_COMPILE: 'NO' }), [
      false,
      false,
    ]);
    assert.deepEqual(compile({ IMAGE_MODEL_COMPILE: 'true', VIDEO_MODEL_COMPILE: '1' }), [
      true,
      true,
    ]);
    // Each alone where the other model is off, or on devices of its own.
    assert.deepEqual(compile({ IMAGE_MODEL_COMPILE: 'true', VIDEO_MODEL_ENABLED: 'false' }), [
      true,
      false,
    ]);
    assert.deepEqual(compile({ VIDEO_MODEL_COMPILE: 'true', IMAGE_MODEL_ENABLED: 'false' }), [
      false,
      true,
    ]);
    assert.deepEqual(
      compile(
        { IMAGE_MODEL_COMPILE: 'true', IMAGE_MODEL_DEVICE: 'cuda:0', VIDEO_GPU_LIST: '1' },
        TWO_GPUS,
      ),
      [true, false],
    );
    assert.equal(
      configError(
        { VIDEO_MODEL_COMPILE: 'true', IMAGE_MODEL_DEVICE: 'cuda:1', VIDEO_GPU_LIST: '0,1' },
        TWO_GPUS,
      ).message,
      'IMAGE_MODEL_COMPILE: is false but VIDEO_MODEL_COMPILE is true, and images and video ' +
        'share cuda:1, whose one engine runs the compiled vision trunk or not: set both alike',
    );
  });

  it('leaves IMAGE_MODEL_RESOLUTION to the bundle unless it is set', () => {
    assert.equal(loadConfig({}, NO_GPU).imageModelResolution, null);
    assert.equal(loadConfig({ IMAGE_MODEL_RESOLUTION: ' ' }, NO_GPU).imageModelResolution, null);
    assert.equal(loadConfig({ IMAGE_MODEL_RESOLUTION: '1008' }, NO_GPU).imageModelResolution, 1008);
  });

  it('turns image batching on with a batch size, its window defaulting to 2 ms', () => {
    const batching = (env: Record<string, string>): [number, number] => {
      const config = loadConfig(env, NO_GPU);
      return [config.imageModelBatchSize, config.imageModelBatchWaitMs];
    };
    assert.deepEqual(batching({ IMAGE_MODEL_BATCH_SIZE: '4' }), [4, 2]);
    assert.deepEqual(
      batching({ IMAGE_MODEL_BATCH_SIZE: '4', IMAGE_MODEL_BATCH_WAIT_MS: '0' }),
      [4, 0],
    );
    assert.deepEqual(
      batching({ IMAGE_MODEL_BATCH_SIZE: '16', MAX_CONCURRENT_REQUESTS: '16' }),
      [16, 2],
    );
    assert.deepEqual(batching({ IMAGE_MODEL_BATCH_SIZE: '1' }), [1, 0]);
  });

  it('parses IMAGE_MODEL_REQUIRED', () => {
    assert.equal(loadConfig({ IMAGE_MODEL_REQUIRED: 'true' }, NO_GPU).imageModelRequired, true);
    assert.equal(loadConfig({ IMAGE_MODEL_REQUIRED: 'no' }, NO_GPU).imageModelRequired, false);
  });

  it('accepts IP addresses and host names as METRICS_HOST and SERVER_HOST', () => {
    for (const host of ['0.0.0.0', '10.1.2.3', '::', '::1', 'fe80::1', 'localhost', 'gpu-01.lan']) {
      const config = loadConfig({ METRICS_HOST: host, SERVER_HOST: host }, NO_GPU);
      assert.equal(config.metricsHost, host);
      assert.equal(config.serverHost, host);
    }
  });

  it('keeps ENABLE_METRICS and METRICS_PORT', () => {
    const config = loadConfig({ ENABLE_METRICS: 'true', METRICS_PORT: '9400' }, NO_GPU);
    assert.equal(config.enableMetrics, true);
    assert.equal(config.metricsPort, 9400);
    assert.equal(configError({ METRICS_PORT: '65536' }).variable, 'METRICS_PORT');
  });
});
