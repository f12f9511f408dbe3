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
        serverWorkers: 1,
        logLevel: 'INFO',
        reload: false,
        nodeEnv: 'development',
        sam3Checkpoint: 'weights/sam3',
        sam3BpePath: null,
        imageModelDevice: 'cpu',
        imageModelCompile: false,
        imageModelConfidenceThreshold: 0.5,
        imageModelResolution: 1008,
        imageModelEnabled: true,
        videoModelEnabled: true,
        videoModelRequired: false,
        videoGpuList: [],
        videoModelCompile: false,
        videoDevices: ['cpu'],
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
        maxUploadSizeMb: 100,
        enableMetrics: false,
        metricsPort: 9090,
        trustProxyHops: 0,
        maxImagePixels: 40_000_000,
        maxJsonBodyMb: 100,
        requestTimeoutSeconds: 300,
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
      assert.equal(loadConfig({ RELOAD: word }, NO_GPU).reload, true, word);
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
    [{ SERVER_WORKERS: '0' }, 'SERVER_WORKERS', />= 1/],
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
    [{ TRUST_PROXY_HOPS: 'true' }, 'TRUST_PROXY_HOPS', /expected a number/],
    [{ MAX_UPLOAD_SIZE_MB: '0' }, 'MAX_UPLOAD_SIZE_MB', /> 0/],
    [{ MAX_IMAGE_PIXELS: '-5' }, 'MAX_IMAGE_PIXELS', />= 1/],
    [{ REQUEST_TIMEOUT_SECONDS: 'Infinity' }, 'REQUEST_TIMEOUT_SECONDS', /number/],
    [{ RATE_LIMIT_WINDOW_SECONDS: '0' }, 'RATE_LIMIT_WINDOW_SECONDS', />= 1/],
    [{ RATE_LIMIT_WINDOW_SECONDS: '1.5' }, 'RATE_LIMIT_WINDOW_SECONDS', /integer/],
    [{ RATE_LIMIT_WINDOW_SECONDS: '86401' }, 'RATE_LIMIT_WINDOW_SECONDS', /<= 86400/],
    [{ RATE_LIMIT_WINDOW_SECONDS: 'minute' }, 'RATE_LIMIT_WINDOW_SECONDS', /expected a number/],
    [{ RATE_LIMIT_REQUESTS_PER_MINUTE: '0' }, 'RATE_LIMIT_REQUESTS_PER_MINUTE', />= 1/],
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
