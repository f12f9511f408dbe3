/**
 * npm start (scripts/start.sh) preloads the allocator MEMORY_ALLOCATOR names, mimalloc by
 * default, and the server reports and checks what it runs on: the real script, the real
 * dynamic loader and the child's /proc/<pid>/maps. Needs Debian's libmimalloc2.0 (.ci/run
 * installs it).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { allocatorInMaps } from '../../src/allocator';
import { repoPath } from '../helpers/repo';

const MIMALLOC_CANDIDATES = [
  '/usr/lib/x86_64-linux-gnu/libmimalloc.so.2',
  '/usr/lib/aarch64-linux-gnu/libmimalloc.so.2',
];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The allocator in the process's memory map while it served. */
  mapped: string | null;
}

/**
 * Starts `command` (the server, which exec's in place of the script), waits until it listens
 * and reads its memory map, then stops it with SIGTERM; or collects a start-up failure.
 */
function run(command: string, args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: repoPath(),
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let mapped: string | null = null;
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (mapped === null && /listening on/.test(stdout)) {
        mapped = 'pending';
        readFile(`/proc/${child.pid}/maps`, 'utf8')
          .then((maps) => (mapped = allocatorInMaps(maps).name))
          .catch(reject)
          .finally(() => child.kill('SIGTERM'));
      }
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr, mapped }));
    setTimeout(() => child.kill('SIGKILL'), 30_000).unref();
  });
}

function reported(output: string): string | undefined {
  return /memory allocator: (\w+)/.exec(output)?.[1];
}

describe('npm start and MEMORY_ALLOCATOR', () => {
  let dir: string;
  let env: Record<string, string>;

  before(async () => {
    assert.ok(
      MIMALLOC_CANDIDATES.some((file) => existsSync(file)),
      'libmimalloc.so.2 is not installed: apt-get install libmimalloc2.0',
    );
    dir = await mkdtemp(path.join(os.tmpdir(), 'sam3-start-'));
    // No bundle: the server listens (loading fails, which is not fatal by default).
    env = {
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: '0',
      SAM3_CHECKPOINT: path.join(dir, 'no-bundle'),
      OUTPUT_DIR: path.join(dir, 'outputs'),
      UPLOAD_DIR: path.join(dir, 'uploads'),
    };
  });

  after(() => rm(dir, { recursive: true, force: true }));

  it('runs on mimalloc by default, and says so', async () => {
    const started = await run('bash', [repoPath('scripts', 'start.sh')], env);
    assert.equal(started.mapped, 'mimalloc', started.stderr);
    assert.equal(reported(started.stdout), 'mimalloc');
    assert.equal(started.code, 0);
  });

  it('keeps the system allocator with MEMORY_ALLOCATOR=system', async () => {
    const started = await run('bash', [repoPath('scripts', 'start.sh')], {
      ...env,
      MEMORY_ALLOCATOR: 'system',
    });
    assert.equal(started.mapped, 'system', started.stderr);
    assert.equal(reported(started.stdout), 'system');
  });

  it('refuses an allocator the process does not run on, saying how to start', async () => {
    const started = await run(process.execPath, [repoPath('dist', 'src', 'main.js')], {
      ...env,
      MEMORY_ALLOCATOR: 'mimalloc',
    });
    assert.equal(started.code, 1);
    assert.match(
      started.stderr,
      /^configuration error: MEMORY_ALLOCATOR: is mimalloc but the process runs on the system allocator: start the server with npm start/m,
    );
  });

  it('refuses an unknown allocator, naming the values it takes', async () => {
    const started = await run('bash', [repoPath('scripts', 'start.sh')], {
      ...env,
      MEMORY_ALLOCATOR: 'tcmalloc',
    });
    assert.equal(started.code, 1);
    assert.match(
      started.stderr,
      /MEMORY_ALLOCATOR: expected one of auto, mimalloc, jemalloc, system, got "tcmalloc"/,
    );
  });
});
