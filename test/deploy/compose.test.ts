/**
 * docker-compose.yml: `docker compose config` is not available here (no compose plugin, no
 * daemon), so dclint validates it against the Compose Specification's JSON schema and its
 * best-practice rules, and the test asserts what the deployment needs: the GPU reservation of
 * the original specification, the bundle volume, the image's paths, the healthcheck and a stop
 * grace period longer than the server's drain.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config';
import { repoPath } from '../helpers/repo';
import { readRepoFile, run } from './tools';

const DCLINT = repoPath('node_modules', 'dclint', 'bin', 'dclint.cjs');

interface LintReport {
  filePath: string;
  messages: { rule: string; type: string; message: string; line: number }[];
}

async function dclint(file: string): Promise<LintReport[]> {
  const finished = await run(process.execPath, [DCLINT, file, '-f', 'json', '--color', 'false'], {
    cwd: repoPath(),
  });
  assert.ok(
    finished.code === 0 || finished.code === 1,
    `dclint exit ${finished.code}: ${finished.stderr}`,
  );
  return JSON.parse(finished.stdout) as LintReport[];
}

interface Service {
  build: { context: string };
  volumes: string[];
  environment: Record<string, string>;
  env_file: { path: string; required: boolean }[];
  ports: string[];
  restart: string;
  healthcheck: { test: string[]; interval: string; start_period: string };
  deploy: {
    resources: {
      reservations: { devices: { driver: string; count: string; capabilities: string[] }[] };
    };
  };
  init: boolean;
  read_only: boolean;
  stop_grace_period: string;
}

const TEXT = readRepoFile('docker-compose.yml');
const compose = parse(TEXT) as { services: Record<string, Service>; volumes: Record<string, null> };
const service = compose.services['sam3-server'];

describe('docker-compose.yml', () => {
  let scratch: string;
  before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), 'sam3-compose-'));
  });
  after(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('passes dclint (the Compose Specification schema and its rules) with no problem', async () => {
    const [report] = await dclint('docker-compose.yml');
    assert.deepEqual(report.messages, []);
  });

  it('is what dclint checks: a misspelt key of the GPU reservation is a schema error', async () => {
    const broken = path.join(scratch, 'docker-compose.yml');
    await writeFile(broken, TEXT.replace('- driver: nvidia', '- drivr: nvidia'));
    const [report] = await dclint(broken);
    assert.deepEqual(
      report.messages.map((message) => message.rule),
      ['invalid-schema'],
    );
    assert.match(report.messages[0].message, /reservations\/devices\/0.*additional properties/);
  });

  it('reserves the GPUs as the original specification does', () => {
    assert.deepEqual(service.deploy, {
      resources: {
        reservations: { devices: [{ driver: 'nvidia', count: 'all', capabilities: ['gpu'] }] },
      },
    });
  });

  it('builds this Dockerfile and mounts the bundle read-only where the image expects it', () => {
    assert.deepEqual(service.build, { context: '.' });
    assert.deepEqual(service.volumes, [
      './weights:/models:ro',
      'uploads:/var/lib/sam3/uploads',
      'outputs:/var/lib/sam3/outputs',
    ]);
    assert.deepEqual(Object.keys(compose.volumes), ['uploads', 'outputs']);
    assert.deepEqual(service.env_file, [{ path: '.env', required: false }]);
    const config = loadConfig(service.environment, { cudaDeviceCount: 1 });
    assert.equal(config.sam3Checkpoint, '/models/sam3');
    assert.equal(config.imageModelDevice, 'cuda:0');
    assert.equal(config.uploadDir, '/var/lib/sam3/uploads');
    assert.equal(config.outputDir, '/var/lib/sam3/outputs');
  });

  it('publishes the API and metrics ports on loopback, restarts, stops slower than the drain', () => {
    assert.deepEqual(service.ports, ['127.0.0.1:8000:8000', '127.0.0.1:9090:9090']);
    assert.equal(service.environment.METRICS_HOST, '0.0.0.0');
    assert.equal(service.restart, 'unless-stopped');
    assert.equal(service.init, true);
    assert.equal(service.read_only, true);
    const grace = /^(\d+)s$/.exec(service.stop_grace_period);
    assert.ok(grace !== null, service.stop_grace_period);
    const { shutdownTimeoutSeconds } = loadConfig({}, { cudaDeviceCount: 1 });
    assert.ok(
      Number(grace[1]) > shutdownTimeoutSeconds,
      `${grace[1]} s > ${shutdownTimeoutSeconds} s`,
    );
  });

  it("runs the Dockerfile's HEALTHCHECK command", () => {
    const dockerfile = readRepoFile('Dockerfile');
    const match = /^HEALTHCHECK [^\n]*\\\n\s+CMD (\[.*\])$/m.exec(dockerfile);
    assert.ok(match !== null, 'HEALTHCHECK ... CMD [...] in the Dockerfile');
    assert.deepEqual(service.healthcheck.test, ['CMD', ...(JSON.parse(match[1]) as string[])]);
    assert.equal(service.healthcheck.interval, '30s');
    assert.equal(service.healthcheck.start_period, '300s');
  });
});
