/**
 * bench/gpu/run.sh, the GPU check for a lent CUDA machine, cannot rot between the sessions
 * that have one: its dry run (DEVICE=cpu PRESET=tiny) runs here on the main build's CLI and
 * the tiny test bundle, and every measurement it prints must be there with a number.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { repoPath, venvPython } from '../helpers/repo';
import { exportTinyBundle } from '../helpers/server';
import { makeTempDir, removeDir } from '../helpers/videos';

function run(command: string, args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: repoPath(),
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(output) : reject(new Error(`${command} exited ${code}:\n${output}`)),
    );
  });
}

const NUMBER = String.raw`\d+(?:\.\d+)?`;

describe('bench/gpu/run.sh dry run (DEVICE=cpu PRESET=tiny)', () => {
  let out: string;
  let summary: string;

  before(async () => {
    out = await makeTempDir('sam3-gpu-dry-run-');
    await run('bash', [repoPath('bench', 'gpu', 'run.sh')], {
      DEVICE: 'cpu',
      PRESET: 'tiny',
      ITERS: '1',
      VIDEO_FRAMES: '3',
      VIDEO_OBJECTS: '1 3',
      BATCHES: '1 3',
      CLI: repoPath('build', 'Release', 'sam3_core_cli'),
      BUNDLE: await exportTinyBundle(),
      PYTHON: venvPython(),
      OUT: out,
    });
    summary = await readFile(path.join(out, 'summary.txt'), 'utf8');
  });

  after(() => removeDir(out));

  it('measures the image pipeline of the core and of the reference', () => {
    const core = summary.split('== core: 1008x1008 image, 3 prompts')[1] ?? '';
    assert.match(core, new RegExp(`3 prompts, \\d+ instances kept`));
    for (const stage of ['vision_encoder', 'text_encoder', 'detector', 'rle', 'total']) {
      assert.match(core, new RegExp(`\\n  ${stage} +${NUMBER} ms \\(mean of 1\\)`), stage);
    }
    const reference = summary.split('== reference: transformers eager on cpu')[1] ?? '';
    for (const stage of ['vision_encoder', 'text_encoder', 'detector', 'total']) {
      assert.match(reference, new RegExp(`\\n  ${stage} +${NUMBER} ms`), stage);
    }
  });

  it('measures the cost of an extra prompt on both sides', () => {
    for (const side of ['core', 'reference']) {
      assert.match(
        summary,
        new RegExp(
          `\\n  ${side} +-?${NUMBER} ms per extra prompt \\(1 prompt ${NUMBER} ms, 4 prompts ${NUMBER} ms\\)`,
        ),
        side,
      );
    }
  });

  it('measures batched throughput of the core, fp32 and bf16, beside the reference', () => {
    for (const dtype of ['fp32', 'bf16']) {
      for (const batch of [1, 3]) {
        assert.match(
          summary,
          new RegExp(`\\n  core ${dtype} +${NUMBER} images/s \\(batch ${batch}\\)\\n`),
          `${dtype} batch ${batch}`,
        );
      }
    }
    assert.match(
      summary,
      new RegExp(`\\n  reference +${NUMBER} images/s \\(one at a time, 1 prompt ${NUMBER} ms\\)`),
    );
  });

  it('exports the bf16 bundle of the same weights (trunk compiled too) and measures it: speed and accuracy', () => {
    assert.match(summary, /\[export\] froze the bfloat16 modules/);
    const core = summary.split('== core bf16: 1008x1008 image, 3 prompts')[1] ?? '';
    for (const stage of ['vision_encoder', 'detector', 'total']) {
      assert.match(core, new RegExp(`\\n  ${stage} +${NUMBER} ms \\(mean of 1\\)`), stage);
    }
    assert.match(summary, /\[export\] compiled the vision trunk with AOTInductor/);
    const compiled =
      summary.split('== core bf16, compiled vision trunk (IMAGE_MODEL_COMPILE=true)')[1] ?? '';
    for (const stage of ['vision_encoder', 'detector', 'total']) {
      assert.match(compiled, new RegExp(`\\n  ${stage} +${NUMBER} ms \\(mean of 1\\)`), stage);
    }
    const report = summary.split('== accuracy of the bf16 bundle against the fp32 one')[1] ?? '';
    assert.match(report, /\ncandidate_dtype: bfloat16\n/);
    assert.match(report, new RegExp(`\\nconfident_iou: \\{'min': ${NUMBER}, 'mean': ${NUMBER}`));
  });

  it('measures click tracking for each object count on both sides', () => {
    for (const objects of [1, 3]) {
      assert.match(
        summary,
        new RegExp(
          `640x480, ${objects} objects, 2 frames propagated[^\\n]*\\n  propagation +${NUMBER} fps`,
        ),
      );
      assert.match(
        summary,
        new RegExp(`reference, ${objects} objects: ${NUMBER} fps, peak RSS \\d+ MiB`),
      );
      assert.match(
        summary,
        new RegExp(
          `  bf16: [^\\n]*640x480, ${objects} objects, 2 frames propagated[^\\n]*\\n  propagation +${NUMBER} fps`,
        ),
      );
    }
    assert.match(summary, /== done: compare fps per object count/);
  });
});
