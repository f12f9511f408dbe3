/**
 * npm run bench:video -- --text [--frames N]
 *
 * Text prompts in video (concept tracking) through the HTTP API against the Python reference
 * (transformers' Sam3VideoModel, eager fp32; tools/video_concept_reference.py) on the same
 * bundle and the same lossless video, in the same run: frames per second of a forward
 * propagation (the default hotstart delay) for a text prompt that yields 1, 5 and 20 objects,
 * and the server's per-stage split (trunk, detector, tracker, post-processing) from the core
 * CLI on the same frames.
 *
 * The bundle is the random tiny-b preset (32 detector queries) with its detection thresholds
 * (score_threshold_detection, new_det_thresh) lowered to 0.05 in both its manifest and its
 * hf/ config, so that the prompt frame has more than 20 detections; the object limit
 * (VIDEO_MAX_OBJECTS on the server, the model's max_num_objects on the reference) then sets
 * the object count.
 */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { ClipTokenizer } from '../src/engine/tokenizer';
import { exportRandomBundle, tempDir } from '../test/helpers/reference';
import { repoPath } from '../test/helpers/repo';
import { postJson, startTestServer } from '../test/helpers/server';
import { runConceptReference, type ConceptOp } from '../test/helpers/video-concept-reference';
import { conceptShapesFrames, writeLosslessVideo } from '../test/helpers/videos';
import { allocatorLine, numberOption } from './common';

const execFileAsync = promisify(execFile);
const WIDTH = 160;
const HEIGHT = 120;
const TEXT = 'object';
const THRESHOLD = 0.05;
const STAGE_GROUPS: Record<string, string[]> = {
  trunk: ['preprocess', 'vision_encoder'],
  detector: ['detector', 'text_encoder'],
  tracker: ['memory_attention', 'tracker_decoder', 'tracker_mask_decoder', 'memory_encoder'],
  'post-processing': ['postprocess', 'rle'],
};

async function expectOk(response: Response): Promise<unknown> {
  const text = await response.text();
  if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${text}`);
  return JSON.parse(text);
}

/** Lowers the detection thresholds in the bundle's manifest and its hf/ copy alike. */
async function lowerThresholds(bundle: string): Promise<void> {
  const manifestFile = path.join(bundle, 'manifest.json');
  const manifest = JSON.parse(await readFile(manifestFile, 'utf8'));
  // The hf config is edited as text: JSON.stringify would write 4.0 as 4, which transformers'
  // strict config classes refuse where a float is declared.
  const configFile = path.join(bundle, 'hf', 'config.json');
  let config = await readFile(configFile, 'utf8');
  for (const key of ['score_threshold_detection', 'new_det_thresh']) {
    manifest.concept[key] = THRESHOLD;
    const field = new RegExp(`"${key}": [0-9.eE+-]+`);
    if (!field.test(config)) throw new Error(`hf/config.json has no ${key}`);
    config = config.replace(field, `"${key}": ${THRESHOLD}`);
  }
  await writeFile(manifestFile, JSON.stringify(manifest, null, 2));
  await writeFile(configFile, config);
}

/** Server side: the text prompt on frame 0, then a timed forward propagation. */
async function serverRun(
  bundle: string,
  dir: string,
  video: string,
  objects: number,
): Promise<{ fps: number; found: number }> {
  const server = await startTestServer({
    bundleDir: bundle,
    // The reference (transformers without kernels) has no mask NMS or hole filling: neither has
    // the server here.
    env: {
      RATE_LIMIT_ENABLED: 'false',
      UPLOAD_DIR: dir,
      VIDEO_MAX_OBJECTS: String(objects),
      VIDEO_OFFICIAL_POSTPROCESS: 'false',
    },
  });
  try {
    const start = (await expectOk(
      await postJson(`${server.url}/api/v1/video/session/start`, { video_path: video }),
    )) as { session_id: string };
    const base = `${server.url}/api/v1/video/session/${start.session_id}`;
    const prompt = (await expectOk(
      await postJson(`${base}/prompt`, {
        frame_index: 0,
        obj_id: null,
        prompts: [{ type: 'text', text: TEXT }],
      }),
    )) as { obj_id: number[] };
    const t0 = performance.now();
    const result = (await expectOk(
      await postJson(`${base}/propagate`, { direction: 'forward', start_frame_index: 1 }),
    )) as { total_frames: number };
    return {
      fps: (result.total_frames * 1000) / (performance.now() - t0),
      found: prompt.obj_id.length,
    };
  } finally {
    await server.close();
  }
}

/** The core CLI's per-stage times (ms per frame) of the same propagation. */
async function stageSplit(
  bundle: string,
  frames: Buffer[],
  dir: string,
  objects: number,
): Promise<Record<string, number>> {
  const rgb = path.join(dir, 'frames.rgb');
  await writeFile(rgb, Buffer.concat(frames));
  const manifest = JSON.parse(await readFile(path.join(bundle, 'manifest.json'), 'utf8'));
  const tokenizer = await ClipTokenizer.fromFile(
    path.join(bundle, manifest.text.vocab_file),
    manifest.text.context_length,
  );
  const encoded = tokenizer.encode(TEXT);
  const ids = encoded.ids.filter((_, i) => encoded.mask[i] === 1);
  const { stdout } = await execFileAsync(repoPath('build', 'Release', 'sam3_core_cli'), [
    'track',
    bundle,
    rgb,
    String(WIDTH),
    String(HEIGHT),
    '--tokens',
    ids.join(','),
    '--max-objects',
    String(objects),
    '--hotstart-delay',
    String(manifest.concept.hotstart_delay),
    // As the server and the reference in the fps table (transformers without kernels).
    '--official-postprocess',
    'false',
  ]);
  const stages: Record<string, number> = {};
  for (const line of stdout.split('\n')) {
    const match = /^\s+(\S+)\s+([0-9.]+) ms per frame$/.exec(line);
    if (match) stages[match[1]] = Number(match[2]);
  }
  const grouped: Record<string, number> = {};
  for (const [group, names] of Object.entries(STAGE_GROUPS)) {
    grouped[group] = names.reduce((sum, name) => sum + (stages[name] ?? 0), 0);
  }
  return grouped;
}

export async function runTextBench(argv: string[]): Promise<void> {
  const frames = numberOption(argv, '--frames', 16);
  const work = await tempDir('sam3-bench-concepts-');
  try {
    const bundle = path.join(work.dir, 'bundle');
    await exportRandomBundle(bundle, 'tiny-b', 1);
    await lowerThresholds(bundle);
    const pictures = conceptShapesFrames(WIDTH, HEIGHT, frames);
    const video = path.join(work.dir, 'concepts.mp4');
    await writeLosslessVideo(video, pictures, WIDTH, HEIGHT);
    const ops: ConceptOp[] = [
      { op: 'concept', frame: 0, texts: [TEXT] },
      { op: 'propagate', direction: 'forward', start: 1, max_frames: null, hotstart_delay: null },
    ];
    // Untimed warm-up of both sides' first calls.
    await serverRun(bundle, work.dir, video, 1);
    console.log(`\ntext prompt "${TEXT}", ${WIDTH}x${HEIGHT} video, ${frames - 1} frames forward`);
    console.log(allocatorLine());
    console.log('  objects   server fps   reference fps   server / reference');
    const splits: [number, Record<string, number>][] = [];
    for (const objects of [1, 5, 20]) {
      const ours = await serverRun(bundle, work.dir, video, objects);
      const ref = await runConceptReference(bundle, video, ops, {
        threads: 0,
        maxObjects: objects,
      });
      const refFps = ref.timing.frames_per_second[1] ?? NaN;
      console.log(
        `  ${String(ours.found).padStart(7)}   ${ours.fps.toFixed(2).padStart(10)}   ` +
          `${refFps.toFixed(2).padStart(13)}   ${(ours.fps / refFps).toFixed(2).padStart(17)}x`,
      );
      splits.push([objects, await stageSplit(bundle, pictures, work.dir, objects)]);
    }
    console.log('\nserver stages, ms per frame (core CLI, same frames)');
    console.log(
      `  objects ${Object.keys(STAGE_GROUPS)
        .map((g) => g.padStart(16))
        .join('')}`,
    );
    for (const [objects, split] of splits) {
      console.log(
        `  ${String(objects).padStart(7)} ${Object.keys(STAGE_GROUPS)
          .map((g) => split[g].toFixed(1).padStart(16))
          .join('')}`,
      );
    }
  } finally {
    await work.cleanup();
  }
}
