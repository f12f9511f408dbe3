/**
 * npm run bench:batching [-- --full] [-- --requests N] [-- --batch N] [-- --wait MS]
 *                        [-- --dtype bfloat16] [-- --format3 | --compile]
 *
 * Cross-request image batching (IMAGE_MODEL_BATCH_SIZE / IMAGE_MODEL_BATCH_WAIT_MS) end to end
 * through HTTP: the same stream of text-prompted image requests (feature cache off, so every
 * request encodes its image) sent at concurrency 1, 4 and 16 to a server that encodes each image
 * alone and to one that batches up to --batch images (default 8) waiting at most --wait ms
 * (default 2). Prints throughput and p50 / p99 latency of both at each concurrency, the batched /
 * alone throughput ratio, how many encoder calls of each batch size the batched server made, and
 * each server's throughput against the Python reference (transformers, eager fp32, one image at a
 * time), measured in the same run on the uncropped photos the requests' images are cut from.
 * --dtype, --format3 and --compile choose the bundle the servers run, as for bench:image.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { decodedPixelsPng, runReference, tempDir, writePhotos } from '../test/helpers/reference';
import { postJson, startTestServer, type TestServer } from '../test/helpers/server';
import {
  allocatorLine,
  benchBundles,
  flag,
  numberOption,
  servedEnv,
  servedLabel,
  servedOption,
} from './common';

const CONCURRENCY = [1, 4, 16];
const PROMPT = 'person';

interface Level {
  concurrency: number;
  imagesPerSecond: number;
  p50: number;
  p99: number;
}

/** The q-quantile (0..1) of sorted values, nearest rank. */
function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

/** `requests` requests, `concurrency` in flight at a time; every answer must be 200. */
async function drive(
  server: TestServer,
  bodies: string[],
  concurrency: number,
  requests: number,
): Promise<Level> {
  const send = async (i: number): Promise<number> => {
    const started = performance.now();
    const response = await postJson(`${server.url}/api/v1/image/segment`, {
      image: bodies[i % bodies.length],
      prompts: [{ type: 'text', text: PROMPT }],
      confidence_threshold: 0.5,
    });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`segment answered ${response.status}: ${text}`);
    return performance.now() - started;
  };
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < requests) latencies.push(await send(next++));
    }),
  );
  const wall = performance.now() - started;
  latencies.sort((a, b) => a - b);
  return {
    concurrency,
    imagesPerSecond: (requests * 1000) / wall,
    p50: quantile(latencies, 0.5),
    p99: quantile(latencies, 0.99),
  };
}

async function measure(
  bundleDir: string,
  bodies: string[],
  requests: number,
  env: Record<string, string>,
): Promise<{ levels: Level[]; batches: Record<number, number> }> {
  const server = await startTestServer({
    bundleDir,
    env: {
      RATE_LIMIT_ENABLED: 'false',
      ENABLE_FEATURE_CACHE: 'false',
      // Every client of the highest concurrency is admitted at once: the batch, not the
      // admission queue, decides what runs together.
      MAX_CONCURRENT_REQUESTS: String(Math.max(...CONCURRENCY)),
      ...env,
    },
  });
  try {
    const segmenter = server.engineState.segmenter;
    if (segmenter === null) throw new Error('the model did not load');
    await drive(server, bodies, 4, 8); // warm-up, batched where batching is on
    const before = segmenter.stats().imageBatches;
    const levels: Level[] = [];
    for (const concurrency of CONCURRENCY) {
      levels.push(await drive(server, bodies, concurrency, requests));
    }
    const batches: Record<number, number> = {};
    for (const [size, count] of Object.entries(segmenter.stats().imageBatches)) {
      const made = count - (before[size] ?? 0);
      if (made > 0) batches[Number(size)] = made;
    }
    return { levels, batches };
  } finally {
    await server.close();
  }
}

/**
 * Concurrent requests for the same image share one encoding (the feature cache's computations
 * in flight, even with the cache off), so the stream cycles through 3 x 16 distinct images: the
 * photos cropped by 0..15 pixels on the left, more than the highest concurrency has in flight.
 */
async function distinctImages(files: string[]): Promise<string[]> {
  const variants = Math.max(...CONCURRENCY);
  const out: Promise<string>[] = [];
  for (let k = 0; k < variants; k += 1) {
    for (const file of files) {
      out.push(
        (async () => {
          const image = sharp(await readFile(file));
          const { width, height } = await image.metadata();
          const crop = { left: k, top: 0, width: width - k, height };
          return (await image.extract(crop).png().toBuffer()).toString('base64');
        })(),
      );
    }
  }
  return Promise.all(out);
}

const fmt = (v: number, width = 9): string => v.toFixed(1).padStart(width);

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const full = flag(argv, '--full');
  const requests = numberOption(argv, '--requests', full ? 16 : 96);
  const batch = numberOption(argv, '--batch', 8);
  const waitMs = numberOption(argv, '--wait', 2, 0);
  const variant = servedOption(argv);
  const work = await tempDir('sam3-bench-');
  try {
    const { reference: bundle, served } = await benchBundles(full, work.dir, variant);
    const photos = (await writePhotos(work.dir)).slice(0, 3);
    const bodies = await distinctImages(photos.map((p) => p.file));

    // The reference encodes one image at a time: its throughput is the inverse of its time per
    // image (no HTTP, no decoding), after an untimed warm-up case.
    const refCases = await Promise.all(
      photos.map(async (photo) => ({
        image: await decodedPixelsPng(photo.file, path.join(work.dir, `${photo.name}.ref.png`)),
        threshold: 0.5,
        prompts: [{ text: PROMPT }],
      })),
    );
    const refRuns = Array.from({ length: full ? 1 : 5 }, () => refCases).flat();
    const reference = await runReference(bundle, refRuns, ['--warmup']);
    const refMs = Object.values(reference.stage_ms).reduce((a, b) => a + b, 0) / refRuns.length;
    const refPerSecond = 1000 / refMs;

    const alone = await measure(served, bodies, requests, servedEnv(variant));
    const batched = await measure(served, bodies, requests, {
      ...servedEnv(variant),
      IMAGE_MODEL_BATCH_SIZE: String(batch),
      IMAGE_MODEL_BATCH_WAIT_MS: String(waitMs),
    });

    console.log(
      `\nbench:batching  bundle=${full ? 'full (1008 px, random)' : 'tiny (random)'}  ` +
        `images=${photos.map((p) => `${p.width}x${p.height}`).join(',')}  prompt="${PROMPT}"  ` +
        `requests per level=${requests}  batched: size<=${batch}, wait<=${waitMs} ms  ` +
        `server ${servedLabel(variant)}  cache off`,
    );
    console.log(allocatorLine());
    console.log(
      `reference (transformers eager fp32, one at a time): ${refPerSecond.toFixed(2)} images/s`,
    );
    console.log(
      '  clients |  alone: img/s    p50 ms    p99 ms | batched: img/s    p50 ms    p99 ms | ' +
        'batched/alone | alone/ref | batched/ref',
    );
    for (const [i, a] of alone.levels.entries()) {
      const b = batched.levels[i];
      console.log(
        `  ${String(a.concurrency).padStart(7)} | ${fmt(a.imagesPerSecond, 13)} ${fmt(a.p50)} ` +
          `${fmt(a.p99)} | ${fmt(b.imagesPerSecond, 15)} ${fmt(b.p50)} ${fmt(b.p99)} | ` +
          `${(b.imagesPerSecond / a.imagesPerSecond).toFixed(2).padStart(12)}x | ` +
          `${(a.imagesPerSecond / refPerSecond).toFixed(2).padStart(8)}x | ` +
          `${(b.imagesPerSecond / refPerSecond).toFixed(2).padStart(10)}x`,
      );
    }
    const sizes = Object.entries(batched.batches)
      .map(([size, count]) => `${count} x ${size}`)
      .join(', ');
    console.log(`batched server's encoder calls (count x images): ${sizes}`);
  } finally {
    await work.cleanup();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
