/**
 * npm run bench:video [-- --full] [-- --frames N] [-- --dtype bfloat16] [-- --format3 | --compile]
 * npm run bench:video -- --text: text prompts in video instead (bench/video-concepts.ts).
 *
 * Click tracking through the HTTP API against the Python reference (transformers'
 * Sam3TrackerVideoModel, eager fp32; tools/video_reference.py) on the same bundle and the same
 * lossless video, in the same run:
 * - propagation frames per second with 1, 3 and 8 objects (server / reference fps ratio > 1 means
 *   the server is faster);
 * - peak resident memory against video length for both: the reference keeps every frame's
 *   outputs, the server a bounded window, so its memory should stay flat.
 * Default: the tiny random bundle; --full: the full-size random bundle (weights/bench-full) on
 * a few frames and one object count (a CPU takes tens of seconds per full-size frame).
 * --dtype: the server runs the bundle of the same weights at that precision (the reference stays
 * fp32 eager). --format3: the server runs the bundle in the format-3 layout (one vision encoder,
 * both necks every frame), to measure what running only the tracker's neck saves. --compile: the
 * server runs the bundle with its vision trunk compiled by AOTInductor (VIDEO_MODEL_COMPILE).
 */
import path from 'node:path';
import { tempDir } from '../test/helpers/reference';
import { postJson, startTestServer, type TestServer } from '../test/helpers/server';
import { runVideoReference, type ReferenceOp } from '../test/helpers/video-reference';
import { movingShapesFrames, writeLosslessVideo } from '../test/helpers/videos';
import {
  allocatorLine,
  benchBundles,
  flag,
  numberOption,
  servedEnv,
  servedLabel,
  servedOption,
} from './common';
import { runTextBench } from './video-concepts';

const WIDTH = 160;
const HEIGHT = 120;

/** Clicks for `count` objects spread over the frame (normalized x, y). */
function clicks(count: number): number[][] {
  return Array.from({ length: count }, (_, i) => [
    0.15 + (0.7 * (i % 4)) / 3,
    0.25 + 0.5 * Math.floor(i / 4),
  ]);
}

function promptOps(count: number): ReferenceOp[] {
  return clicks(count).map((point, i) => ({
    op: 'prompt',
    frame: 0,
    obj_id: i + 1,
    points: [point],
    point_labels: [1],
    box: null,
  }));
}

async function expectOk(response: Response): Promise<unknown> {
  const text = await response.text();
  if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${text}`);
  return JSON.parse(text);
}

/** Server side: prompts on frame 0, then a timed forward propagation; peak RSS sampled. */
async function serverRun(
  server: TestServer,
  video: string,
  objects: number,
  frames: number,
): Promise<{ fps: number; peakRssMb: number }> {
  const start = (await expectOk(
    await postJson(`${server.url}/api/v1/video/session/start`, { video_path: video }),
  )) as { session_id: string };
  const base = `${server.url}/api/v1/video/session/${start.session_id}`;
  try {
    for (const point of clicks(objects)) {
      await expectOk(
        await postJson(`${base}/prompt`, {
          frame_index: 0,
          obj_id: null,
          prompts: [{ type: 'point', points: [point], point_labels: [1] }],
        }),
      );
    }
    let peak = process.memoryUsage().rss;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 20);
    const t0 = performance.now();
    await expectOk(
      await postJson(`${base}/propagate`, {
        direction: 'forward',
        start_frame_index: 0,
        max_frames: frames,
      }),
    );
    const elapsed = performance.now() - t0;
    clearInterval(sampler);
    return { fps: (frames * 1000) / elapsed, peakRssMb: peak / 2 ** 20 };
  } finally {
    await fetch(base, { method: 'DELETE' });
  }
}

async function referenceRun(
  bundle: string,
  video: string,
  objects: number,
  frames: number,
): Promise<{ fps: number; peakRssMb: number }> {
  const ops: ReferenceOp[] = [
    ...promptOps(objects),
    { op: 'propagate', direction: 'forward', start: 0, max_frames: frames },
  ];
  const out = await runVideoReference(bundle, video, ops);
  return { fps: out.timing.frames_per_second[ops.length - 1] ?? NaN, peakRssMb: out.peak_rss_mb };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (flag(argv, '--text')) {
    const other = ['--full', '--dtype', '--format3', '--compile'].filter((f) => argv.includes(f));
    if (other.length > 0)
      throw new Error(`--text runs the tiny fp32 bundle: not ${other.join(', ')}`);
    await runTextBench(argv);
    return;
  }
  const full = flag(argv, '--full');
  const frames = numberOption(argv, '--frames', full ? 3 : 24);
  const objectCounts = full ? [1] : [1, 3, 8];
  const lengths = full ? [] : [frames, frames * 4];
  const variant = servedOption(argv);
  const work = await tempDir('sam3-bench-video-');
  try {
    const { reference: bundle, served } = await benchBundles(full, work.dir, variant);
    const writeVideo = async (count: number): Promise<string> => {
      const file = path.join(work.dir, `shapes-${count}.mp4`);
      await writeLosslessVideo(file, movingShapesFrames(WIDTH, HEIGHT, count), WIDTH, HEIGHT);
      return file;
    };
    const video = await writeVideo(frames + 1);
    const server = await startTestServer({
      bundleDir: served,
      env: { RATE_LIMIT_ENABLED: 'false', UPLOAD_DIR: work.dir, ...servedEnv(variant) },
    });
    try {
      // Untimed warm-up (first-call graph optimisation on both sides is not what we measure).
      await serverRun(server, video, 1, 2);
      console.log(
        `\npropagation, ${WIDTH}x${HEIGHT} video, ${frames} frames forward, server ${servedLabel(variant)}`,
      );
      console.log(allocatorLine());
      console.log('  objects   server fps   reference fps   server / reference');
      for (const objects of objectCounts) {
        const ours = await serverRun(server, video, objects, frames);
        const ref = await referenceRun(bundle, video, objects, frames);
        console.log(
          `  ${String(objects).padStart(7)}   ${ours.fps.toFixed(2).padStart(10)}   ` +
            `${ref.fps.toFixed(2).padStart(13)}   ${(ours.fps / ref.fps).toFixed(2).padStart(17)}x`,
        );
      }
      if (lengths.length > 0) {
        console.log('\npeak resident memory against video length (1 object, whole video)');
        console.log('  frames   server MiB   reference MiB');
        for (const length of lengths) {
          const file = await writeVideo(length);
          const ours = await serverRun(server, file, 1, length);
          const ref = await referenceRun(bundle, file, 1, length);
          console.log(
            `  ${String(length).padStart(6)}   ${ours.peakRssMb.toFixed(0).padStart(10)}   ` +
              `${ref.peakRssMb.toFixed(0).padStart(13)}`,
          );
        }
        console.log('  (server: this whole process, bench included; reference: its process)');
      }
    } finally {
      await server.close();
    }
  } finally {
    await work.cleanup();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
