/**
 * npm run bench:cache [-- --full] [-- --iterations N]
 *
 * One image, N = 1, 5, 10 text prompts: POST /cached-features (image encoded once, prompts
 * batched through the detector) against N separate /segment requests that each encode the
 * image (feature cache off, as requests without a cache would). Prints both times, the
 * measured speed-up, and the ideal speed-up (E + D) / (E / N + D) from the encoder time E and
 * the per-prompt text + detector time D measured in the same run, with measured / ideal.
 * Each cached-features call uses a fresh copy of the image (one pixel differs), so it pays
 * the encoder once, like the first request on a new image.
 */
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { tempDir, writePhotos } from '../test/helpers/reference';
import { postJson, startTestServer, type TestServer } from '../test/helpers/server';
import {
  addInto,
  allocatorLine,
  benchBundle,
  flag,
  numberOption,
  row,
  serverTiming,
} from './common';

const PROMPTS = ['person', 'car', 'tree', 'dog', 'cat', 'bicycle', 'cup', 'window', 'road', 'sky'];

async function timed(
  server: TestServer,
  path: string,
  body: unknown,
): Promise<{ ms: number; timing: Record<string, number> }> {
  const started = performance.now();
  const response = await postJson(`${server.url}${path}`, body);
  const text = await response.text();
  const ms = performance.now() - started;
  if (response.status !== 200) throw new Error(`${path} answered ${response.status}: ${text}`);
  return { ms, timing: serverTiming(response.headers.get('server-timing')) };
}

/** The photo as PNG base64, with pixel (0, 0) set from `variant`: a new cache key each time. */
async function variantOf(rgb: { data: Buffer; width: number; height: number }, variant: number) {
  const data = Buffer.from(rgb.data);
  data[0] = variant % 256;
  data[1] = Math.floor(variant / 256) % 256;
  const png = await sharp(data, { raw: { width: rgb.width, height: rgb.height, channels: 3 } })
    .png()
    .toBuffer();
  return png.toString('base64');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const full = flag(argv, '--full');
  const iterations = numberOption(argv, '--iterations', full ? 1 : 3);
  const work = await tempDir('sam3-bench-cache-');
  try {
    const bundle = await benchBundle(full, work.dir);
    const [photo] = await writePhotos(work.dir);
    const rgb = await sharp(await readFile(photo.file))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const pixels = { data: rgb.data, width: rgb.info.width, height: rgb.info.height };
    const env = { RATE_LIMIT_ENABLED: 'false' };
    const uncached = await startTestServer({
      bundleDir: bundle,
      env: { ...env, ENABLE_FEATURE_CACHE: 'false' },
    });
    const cached = await startTestServer({ bundleDir: bundle, env });
    let variant = 0;
    try {
      const image = await variantOf(pixels, variant++);
      // Warm-up: first calls of each graph are slower.
      await timed(uncached, '/api/v1/image/segment', {
        image,
        prompts: [{ type: 'text', text: 'warm' }],
      });
      await timed(cached, '/api/v1/image/cached-features', {
        image: await variantOf(pixels, variant++),
        text_prompts: PROMPTS,
      });

      console.log(
        `\nbench:cache  bundle=${full ? 'full (1008 px, random)' : 'tiny (random)'}  ` +
          `image=${photo.width}x${photo.height}  iterations=${iterations}`,
      );
      console.log(allocatorLine());
      for (const n of [1, 5, 10]) {
        const prompts = PROMPTS.slice(0, n);
        let separateMs = 0;
        let cachedMs = 0;
        const stages: Record<string, number> = {};
        for (let i = 0; i < iterations; i += 1) {
          for (const text of prompts) {
            const r = await timed(uncached, '/api/v1/image/segment', {
              image,
              prompts: [{ type: 'text', text }],
              confidence_threshold: 0.5,
            });
            separateMs += r.ms;
            addInto(stages, r.timing, 1 / (iterations * n));
          }
          const r = await timed(cached, '/api/v1/image/cached-features', {
            image: await variantOf(pixels, variant++),
            text_prompts: prompts,
            confidence_threshold: 0.5,
          });
          cachedMs += r.ms;
        }
        separateMs /= iterations;
        cachedMs /= iterations;
        const encoder = stages.image_features ?? 0;
        const detector = (stages.text_features ?? 0) + (stages.detect ?? 0);
        const ideal = (encoder + detector) / (encoder / n + detector);
        const measured = separateMs / cachedMs;
        console.log(`N = ${n}`);
        console.log(row(`${n} separate /segment requests`, separateMs));
        console.log(row('one /cached-features request', cachedMs));
        console.log(row('encoder E (per request)', encoder));
        console.log(row('text + detector D (per prompt)', detector));
        console.log(
          `  speed-up ${measured.toFixed(2)}x, ideal (E + D) / (E / N + D) = ${ideal.toFixed(2)}x, ` +
            `measured / ideal = ${(measured / ideal).toFixed(2)}`,
        );
      }
    } finally {
      await cached.close();
      await uncached.close();
    }
  } finally {
    await work.cleanup();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
