/**
 * npm run bench:image [-- --full] [-- --iterations N] [-- --dtype bfloat16 [--accuracy]]
 *   [-- --format3 | --compile]
 *
 * Text-prompted image segmentation end to end through HTTP against the Python reference
 * (transformers, eager fp32) on the same bundle and the same decoded pixels, in the same run.
 * Prints per-stage times of both and the end-to-end ratio (reference / server; > 1 means the
 * server is faster). Default: the tiny random bundle; --full: a full-size random-weight bundle
 * at 1008 px (weights/bench-full, exported on first use: minutes on a CPU, 7 GB of disk).
 * --dtype: the server runs the bundle of the same weights at that precision (the reference stays
 * fp32 eager); --accuracy adds tools/precision_report.py's measures of it against fp32.
 * --format3: the server runs the bundle in the format-3 layout (one vision encoder, both necks
 * for every image), to measure what running only the detector's neck saves. --compile: the
 * server runs the bundle with its vision trunk compiled by AOTInductor (IMAGE_MODEL_COMPILE).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { decodedPixelsPng, runReference, tempDir, writePhotos } from '../test/helpers/reference';
import { postJson, startTestServer } from '../test/helpers/server';
import {
  addInto as add,
  allocatorLine,
  benchBundles,
  flag,
  numberOption,
  precisionReport,
  row,
  servedEnv,
  servedLabel,
  servedOption,
  serverTiming,
} from './common';

const PROMPTS = ['person', 'a cup of coffee', 'cat'];

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const full = flag(argv, '--full');
  const iterations = numberOption(argv, '--iterations', full ? 1 : 5);
  const variant = servedOption(argv);
  const work = await tempDir('sam3-bench-');
  try {
    const { reference: bundle, served } = await benchBundles(full, work.dir, variant);
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

    // Cache off: every request pays every stage, as the reference does.
    const server = await startTestServer({
      bundleDir: served,
      env: { RATE_LIMIT_ENABLED: 'false', ENABLE_FEATURE_CACHE: 'false', ...servedEnv(variant) },
    });
    const segmenter = server.engineState.segmenter;
    if (segmenter === null) throw new Error('the model did not load');
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
          // Requests run one at a time: the engine's last stage times are this request's.
          const { decode, hash } = serverTiming(response.headers.get('server-timing'));
          add(stages, { decode, hash, ...segmenter.engineStageTimes() });
          requests += 1;
        }
      }
    } finally {
      await server.close();
    }
    for (const k of Object.keys(stages)) stages[k] /= requests;
    const serverPerImage = wall / requests;
    const accounted = Object.values(stages).reduce((a, b) => a + b, 0);

    console.log(
      `\nbench:image  bundle=${full ? 'full (1008 px, random)' : 'tiny (random)'}  ` +
        `images=${photos.map((p) => `${p.width}x${p.height}`).join(',')}  prompts=${PROMPTS.length}  ` +
        `iterations=${iterations}  server ${servedLabel(variant)}`,
    );
    console.log(allocatorLine());
    console.log('server (per request, mean):');
    for (const [k, v] of Object.entries(stages)) console.log(row(k, v));
    console.log(row('http + json + other', serverPerImage - accounted));
    console.log(row('end to end (client)', serverPerImage));
    console.log('reference, transformers eager (per image, mean):');
    for (const [k, v] of Object.entries(refStages)) console.log(row(k, v));
    console.log(row('total (no decode, no HTTP)', refPerImage));
    console.log(
      `ratio reference / server end to end: ${(refPerImage / serverPerImage).toFixed(2)}x`,
    );
    if (flag(argv, '--accuracy') && served !== bundle) {
      // The report runs the bundles' TorchScript modules: a compiled trunk is checked against
      // its TorchScript graph by the exporter instead.
      const modules = variant.compile ? ', its TorchScript modules' : '';
      console.log(
        `accuracy of the ${variant.dtype} bundle${modules} against fp32 (tools/precision_report.py):`,
      );
      console.log(await precisionReport(bundle, served));
    }
  } finally {
    await work.cleanup();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
