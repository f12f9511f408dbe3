/**
 * npm run bench:image [-- --full] [-- --iterations N]
 *
 * Text-prompted image segmentation end to end through HTTP against the Python reference
 * (transformers, eager fp32) on the same bundle and the same decoded pixels, in the same run.
 * Prints per-stage times of both and the end-to-end ratio (reference / server; > 1 means the
 * server is faster). Default: the tiny random bundle; --full: a full-size random-weight bundle
 * at 1008 px (weights/bench-full, exported on first use: minutes on a CPU, 7 GB of disk).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  decodedPixelsPng,
  exportRandomBundle,
  runReference,
  tempDir,
  writePhotos,
} from '../test/helpers/reference';
import { repoPath } from '../test/helpers/repo';
import { postJson, startTestServer } from '../test/helpers/server';

const PROMPTS = ['person', 'a cup of coffee', 'cat'];

function parseArgs(argv: string[]): { full: boolean; iterations: number } {
  const full = argv.includes('--full');
  const at = argv.indexOf('--iterations');
  const iterations = at >= 0 ? Number(argv[at + 1]) : full ? 1 : 5;
  if (!Number.isInteger(iterations) || iterations < 1) throw new Error('--iterations N, N >= 1');
  return { full, iterations };
}

/** Parses `Server-Timing: a;dur=1.5, b;dur=2` into {a: 1.5, b: 2}. */
function serverTiming(header: string | null): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of (header ?? '').split(',')) {
    const [name, ...params] = part.trim().split(';');
    const dur = params.find((p) => p.trim().startsWith('dur='));
    if (name && dur) out[name] = Number(dur.trim().slice(4));
  }
  return out;
}

function add(into: Record<string, number>, from: Record<string, number>, scale = 1): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v * scale;
}

function row(label: string, ms: number | undefined): string {
  return `  ${label.padEnd(28)} ${ms === undefined ? '-'.padStart(10) : ms.toFixed(1).padStart(10)} ms`;
}

async function main(): Promise<void> {
  const { full, iterations } = parseArgs(process.argv.slice(2));
  const work = await tempDir('sam3-bench-');
  try {
    let bundle = path.join(work.dir, 'bundle');
    if (full) {
      bundle = repoPath('weights', 'bench-full');
      if (!existsSync(path.join(bundle, 'manifest.json'))) {
        console.log(`exporting the full-size random bundle to ${bundle} (minutes) ...`);
        await exportRandomBundle(bundle, 'full', 0);
      }
    } else {
      await exportRandomBundle(bundle, 'tiny', 0);
    }
    const photos = (await writePhotos(work.dir)).slice(0, full ? 1 : 3);
    const cases = await Promise.all(
      photos.map(async (photo) => ({
        image: await decodedPixelsPng(photo.file, path.join(work.dir, `${photo.name}.ref.png`)),
        threshold: 0.5,
        prompts: PROMPTS.map((text) => ({ text })),
      })),
    );

    // Reference: an untimed warm-up case, then every case `iterations` times.
    const refCases = Array.from({ length: iterations }, () => cases).flat();
    const reference = await runReference(bundle, refCases, ['--warmup']);
    const refStages: Record<string, number> = {};
    add(refStages, reference.stage_ms, 1 / refCases.length);
    const refPerImage = Object.values(refStages).reduce((a, b) => a + b, 0);

    const server = await startTestServer({
      bundleDir: bundle,
      env: { RATE_LIMIT_ENABLED: 'false' },
    });
    const stages: Record<string, number> = {};
    let wall = 0;
    let requests = 0;
    try {
      const bodies = await Promise.all(
        photos.map(async (p) => (await readFile(p.file)).toString('base64')),
      );
      const send = (image: string) =>
        postJson(`${server.url}/api/v1/image/segment`, {
          image,
          prompts: PROMPTS.map((text) => ({ type: 'text', text })),
          confidence_threshold: 0.5,
        });
      for (const image of bodies) await (await send(image)).arrayBuffer(); // warm-up
      for (let i = 0; i < iterations; i += 1) {
        for (const image of bodies) {
          const started = performance.now();
          const response = await send(image);
          await response.arrayBuffer();
          wall += performance.now() - started;
          if (response.status !== 200) throw new Error(`segment answered ${response.status}`);
          add(stages, serverTiming(response.headers.get('server-timing')));
          requests += 1;
        }
      }
    } finally {
      await server.close();
    }
    for (const k of Object.keys(stages)) stages[k] /= requests;
    const serverPerImage = wall / requests;
    const accounted = Object.entries(stages)
      .filter(([k]) => k !== 'total')
      .reduce((a, [, v]) => a + v, 0);

    console.log(
      `\nbench:image  bundle=${full ? 'full (1008 px, random)' : 'tiny (random)'}  ` +
        `images=${photos.map((p) => `${p.width}x${p.height}`).join(',')}  prompts=${PROMPTS.length}  ` +
        `iterations=${iterations}`,
    );
    console.log('server (per request, mean):');
    for (const [k, v] of Object.entries(stages)) if (k !== 'total') console.log(row(k, v));
    console.log(row('http + json + other', serverPerImage - accounted));
    console.log(row('end to end (client)', serverPerImage));
    console.log('reference, transformers eager (per image, mean):');
    for (const [k, v] of Object.entries(refStages)) console.log(row(k, v));
    console.log(row('total (no decode, no HTTP)', refPerImage));
    console.log(
      `ratio reference / server end to end: ${(refPerImage / serverPerImage).toFixed(2)}x`,
    );
  } finally {
    await work.cleanup();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
