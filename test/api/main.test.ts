/**
 * The real entry point (dist/src/main.js) as a child process: configuration errors stop it
 * with exit code 1, it answers /health while the model loads and after, and SIGTERM stops it
 * cleanly with exit code 0.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { exportRandomBundle, tempDir } from '../helpers/reference';
import { repoPath } from '../helpers/repo';
import {
  compiledTinyBundle,
  editedBundle,
  exportTinyBundle,
  singleImageBundle,
} from '../helpers/server';

const MAIN = repoPath('dist', 'src', 'main.js');

interface Child {
  process: ChildProcess;
  /** Complete lines written to stdout so far. */
  stdoutLines(): string[];
  stderr: string[];
  exited: Promise<number | null>;
}

function start(env: Record<string, string>, cwd: string): Child {
  // Only PATH and HOME from the outside: no stray configuration reaches the child.
  const child = spawn(process.execPath, [MAIN], {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  const stderr: string[] = [];
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const stdoutLines = (): string[] => stdout.split('\n').slice(0, -1);
  return { process: child, stdoutLines, stderr, exited };
}

async function waitFor<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  ms: number,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The URL the child logs once it listens. */
function listeningUrl(child: Child): Promise<string> {
  return waitFor(() => {
    for (const line of child.stdoutLines()) {
      const match = /listening on (http:\/\/[^"\s]+)/.exec(line);
      if (match !== null) return match[1];
    }
    return undefined;
  }, 30_000);
}

/**
 * Waits until the child's /health says ready, then segments a 48x40 grey PNG with `prompts`
 * (threshold 0: every instance kept).
 */
async function segmentWhenReady(
  child: Child,
  prompts: object[],
): Promise<{ status: number; body: { labels: string[]; image_size: unknown } }> {
  const url = await listeningUrl(child);
  await waitFor(
    async () => ((await fetch(`${url}/health`)).status === 200 ? true : undefined),
    60_000,
  );
  const image = await sharp(Buffer.alloc(48 * 40 * 3, 120), {
    raw: { width: 48, height: 40, channels: 3 },
  })
    .png()
    .toBuffer();
  const response = await fetch(`${url}/api/v1/image/segment`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ image: image.toString('base64'), prompts, confidence_threshold: 0 }),
  });
  return { status: response.status, body: (await response.json()) as never };
}

describe('main', () => {
  let cwd: string;
  before(async () => {
    cwd = await mkdtemp(path.join(os.tmpdir(), 'sam3-main-'));
  });
  after(async () => {
    await rm(cwd, { recursive: true, force: true });
  });

  it('exits 1 naming the variable when the configuration is bad', async () => {
    const child = start({ SERVER_PORT: 'eighty' }, cwd);
    assert.equal(await child.exited, 1);
    assert.match(child.stderr.join(''), /configuration error: SERVER_PORT: expected a number/);
  });

  describe('a failed image model load', () => {
    /** Logged error lines (JSON, NODE_ENV=production) whose message matches `pattern`. */
    const loggedErrors = (child: Child, pattern: RegExp): string[] =>
      child
        .stdoutLines()
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { level: string; message: string })
        .filter((entry) => entry.level === 'error' && pattern.test(entry.message))
        .map((entry) => entry.message);
    const brokenEnv = (extra: Record<string, string>): Record<string, string> => ({
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: '0',
      SAM3_CHECKPOINT: path.join(cwd, 'no-such-bundle'),
      NODE_ENV: 'production',
      ...extra,
    });

    it('exits 1 with IMAGE_MODEL_REQUIRED=true, saying why', async () => {
      const child = start(brokenEnv({ IMAGE_MODEL_REQUIRED: 'true' }), cwd);
      try {
        assert.equal(await child.exited, 1);
        assert.equal(
          child.stderr.join(''),
          'fatal: IMAGE_MODEL_REQUIRED is true but the image model failed to load (see the log)\n',
        );
        assert.equal(loggedErrors(child, /^model bundle failed to load: /).length, 1);
      } finally {
        child.process.kill('SIGKILL');
      }
    });

    it('leaves the server up and /health degraded by default (IMAGE_MODEL_REQUIRED=false)', async () => {
      const child = start(brokenEnv({}), cwd);
      try {
        const url = await listeningUrl(child);
        const health = await waitFor(async () => {
          const response = await fetch(`${url}/health`);
          const body = (await response.json()) as {
            status: string;
            devices: { role: string; status: string }[];
          };
          return body.status === 'loading' ? undefined : { code: response.status, body };
        }, 30_000);
        assert.equal(health.code, 503);
        assert.equal(health.body.status, 'degraded');
        assert.deepEqual(
          health.body.devices.map((device) => [device.role, device.status]),
          [
            ['image', 'failed'],
            ['video', 'failed'],
          ],
        );
        assert.equal(loggedErrors(child, /^model bundle failed to load: /).length, 1);
        child.process.kill('SIGTERM');
        assert.equal(await child.exited, 0);
        assert.equal(child.stderr.join(''), '');
      } finally {
        child.process.kill('SIGKILL');
      }
    });

    it('exits 1 on IMAGE_MODEL_BATCH_SIZE with a bundle that cannot batch', async () => {
      // A bundle exported before exporter version 5: its vision encoder says batch 1.
      const work = await tempDir('sam3-single-image-');
      const bundle = await singleImageBundle(path.join(work.dir, 'bundle'));
      const child = start(
        { ...brokenEnv({ IMAGE_MODEL_BATCH_SIZE: '2' }), SAM3_CHECKPOINT: bundle },
        cwd,
      );
      try {
        assert.equal(await child.exited, 1);
        assert.equal(
          child.stderr.join(''),
          "fatal: IMAGE_MODEL_BATCH_SIZE is 2 but the bundle's vision encoder takes one image " +
            'per call (exported before exporter version 5): export it again with ' +
            'tools/export_sam3.py, or set IMAGE_MODEL_BATCH_SIZE=1\n',
        );
      } finally {
        child.process.kill('SIGKILL');
        await work.cleanup();
      }
    });

    it('exits 1 on IMAGE_MODEL_COMPILE / VIDEO_MODEL_COMPILE with a bundle that has no compiled trunk', async () => {
      const child = start(
        {
          ...brokenEnv({ IMAGE_MODEL_COMPILE: 'true', VIDEO_MODEL_COMPILE: 'true' }),
          SAM3_CHECKPOINT: await exportTinyBundle(),
        },
        cwd,
      );
      try {
        assert.equal(await child.exited, 1);
        assert.equal(
          child.stderr.join(''),
          'fatal: IMAGE_MODEL_COMPILE and VIDEO_MODEL_COMPILE are true but the bundle has no ' +
            'compiled vision trunk: export it with tools/export_sam3.py --compile (on a machine ' +
            'like the serving one), or set IMAGE_MODEL_COMPILE and VIDEO_MODEL_COMPILE to false\n',
        );
      } finally {
        child.process.kill('SIGKILL');
      }
    });

    it('serves a compiled bundle with IMAGE_MODEL_COMPILE and VIDEO_MODEL_COMPILE', async () => {
      // Without its TorchScript trunk: only an engine that runs the package can serve it.
      const work = await tempDir('sam3-package-only-');
      const bundle = await editedBundle(
        await compiledTinyBundle(),
        path.join(work.dir, 'bundle'),
        (manifest) => (manifest.modules.vision_trunk.file = 'absent.pt'),
      );
      const child = start(
        {
          ...brokenEnv({ IMAGE_MODEL_COMPILE: 'true', VIDEO_MODEL_COMPILE: 'true' }),
          SAM3_CHECKPOINT: bundle,
        },
        cwd,
      );
      try {
        const { status, body } = await segmentWhenReady(child, [
          { type: 'point', points: [[0.5, 0.5]], point_labels: [1] },
        ]);
        assert.equal(status, 200);
        assert.deepEqual(body.labels, ['point']);
      } finally {
        child.process.kill('SIGKILL');
        await work.cleanup();
      }
    });

    it('exits 1 on an explicit IMAGE_MODEL_RESOLUTION the bundle does not have', async () => {
      const child = start(
        {
          ...brokenEnv({ IMAGE_MODEL_RESOLUTION: '1008' }),
          SAM3_CHECKPOINT: await exportTinyBundle(),
        },
        cwd,
      );
      try {
        assert.equal(await child.exited, 1);
        assert.equal(
          child.stderr.join(''),
          "fatal: IMAGE_MODEL_RESOLUTION is 1008 but the bundle's resolution is 224\n",
        );
      } finally {
        child.process.kill('SIGKILL');
      }
    });
  });

  it('serves the demo bundle that setup creates with the default configuration', async () => {
    // scripts/setup.sh: export_sam3.py --tiny-random --preset demo; then `npm start` with no
    // configuration at all must serve it (its resolution is the default 1008).
    const work = await tempDir('sam3-demo-');
    const child = await (async () => {
      await exportRandomBundle(work.dir, 'demo', 0);
      return start(
        {
          SERVER_HOST: '127.0.0.1',
          SERVER_PORT: '0',
          SAM3_CHECKPOINT: work.dir,
          NODE_ENV: 'production',
        },
        cwd,
      );
    })();
    try {
      const { status, body } = await segmentWhenReady(child, [
        { type: 'text', text: 'cat' },
        { type: 'point', points: [[0.5, 0.5]], point_labels: [1] },
      ]);
      assert.equal(status, 200);
      assert.deepEqual(body.image_size, { width: 48, height: 40 });
      assert.equal(body.labels.at(-1), 'point');
      assert.ok(body.labels.includes('cat'));
    } finally {
      child.process.kill('SIGTERM');
      assert.equal(await child.exited, 0);
      await work.cleanup();
    }
  });

  it('serves /health while loading and when ready; SIGTERM drains in-flight requests, exits 0', async () => {
    const bundleDir = await exportTinyBundle();
    const child = start(
      {
        SERVER_HOST: '127.0.0.1',
        SERVER_PORT: '0',
        // No IMAGE_MODEL_RESOLUTION: the bundle's own (224, not 1008) is used.
        SAM3_CHECKPOINT: bundleDir,
        NODE_ENV: 'production',
      },
      cwd,
    );
    try {
      const url = await listeningUrl(child);
      const first = await fetch(`${url}/health`);
      assert.ok([200, 503].includes(first.status));
      await first.arrayBuffer();
      const ready = await waitFor(async () => {
        const response = await fetch(`${url}/health`);
        const body = (await response.json()) as { status: string };
        return response.status === 200 ? body : undefined;
      }, 180_000); // a tiny bundle loads in seconds; a loaded CI machine is slower
      assert.equal(ready.status, 'ok');
      const warnings = child
        .stdoutLines()
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { level: string; message: string })
        .filter((entry) => entry.level === 'warn' && /RANDOM-WEIGHT/.test(entry.message));
      assert.equal(warnings.length, 1, 'the random bundle is announced at warn level');

      // A request in flight when SIGTERM arrives (its body half sent) still gets its answer.
      const image = await sharp(Buffer.alloc(32 * 32 * 3, 99), {
        raw: { width: 32, height: 32, channels: 3 },
      })
        .png()
        .toBuffer();
      const payload = Buffer.from(
        JSON.stringify({
          image: image.toString('base64'),
          prompts: [{ type: 'text', text: 'cat' }],
          confidence_threshold: 0,
        }),
      );
      const inFlight = http.request(`${url}/api/v1/image/segment`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': payload.length },
      });
      const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
        inFlight.on('response', (response) => {
          let body = '';
          response.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
        });
        inFlight.on('error', reject);
      });
      inFlight.write(payload.subarray(0, payload.length / 2));
      await new Promise((resolve) => setTimeout(resolve, 200));
      const stopped = Date.now();
      child.process.kill('SIGTERM');
      await new Promise((resolve) => setTimeout(resolve, 200));
      await assert.rejects(fetch(`${url}/health`), 'no new connections once stopping');
      inFlight.end(payload.subarray(payload.length / 2));
      const { status, body } = await answered;
      assert.equal(status, 200, body);
      assert.equal((JSON.parse(body) as { num_masks: number }).num_masks > 0, true);
      assert.equal(await child.exited, 0);
      assert.ok(
        Date.now() - stopped < 4_000,
        'stopped before the 5 s keep-alive timeout could expire',
      );
    } finally {
      child.process.kill('SIGKILL');
    }
  });
});
