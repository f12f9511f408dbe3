/**
 * The native preprocessing (native/core/image_pipeline.cpp, run through sam3_core_cli) is
 * bit-identical to SAM3's official torchvision v2 transform on CPU: the uint8 resize equals
 * torch's interpolate(u8[None], (R, R), mode="bilinear", antialias=True), and pixel_values equal
 * ToDtype(float32, scale=True) (a multiplication by 1/255) followed by Normalize(mean, std).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { repoRoot, venvPython } from '../helpers/repo';

const root = repoRoot();
const python = venvPython();
const cli = path.join(root, 'build', 'Release', 'sam3_core_cli');

// Reads raw RGB (HWC uint8) and writes the reference resize as CHW uint8.
const REFERENCE = `
import sys, numpy as np, torch, torch.nn.functional as F
src, w, h, size, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rgb = torch.from_numpy(np.fromfile(src, dtype=np.uint8).reshape(h, w, 3)).permute(2, 0, 1)
resized = F.interpolate(rgb[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
resized[0].contiguous().numpy().tofile(out)
if len(sys.argv) > 6:
    mean = torch.tensor([float(v) for v in sys.argv[6].split(",")]).view(3, 1, 1)
    std = torch.tensor([float(v) for v in sys.argv[7].split(",")]).view(3, 1, 1)
    pixels = resized[0].to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)
    pixels.contiguous().numpy().tofile(out + ".pixels")
`;

function pixels(width: number, height: number, seed: number, smooth: boolean): Buffer {
  const rgb = Buffer.alloc(width * height * 3);
  let state = seed >>> 0;
  for (let i = 0; i < rgb.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const x = Math.floor(i / 3) % width;
    rgb[i] = smooth
      ? Math.floor((x * 255) / Math.max(1, width - 1)) ^ (state >>> 30)
      : state >>> 24;
  }
  return rgb;
}

describe('image resize parity with torch (uint8, antialiased bilinear)', () => {
  let workDir = '';
  before(() => {
    workDir = mkdtempSync(path.join(tmpdir(), 'sam3-resize-'));
  });
  after(() => {
    rmSync(workDir, { recursive: true, force: true });
  });

  const cases: [string, number, number, number, boolean][] = [
    ['downscale 640x480 to 224', 640, 480, 224, false],
    ['upscale 37x91 to 224', 37, 91, 224, false],
    ['same size 224x224', 224, 224, 224, true],
    ['downscale 2000x1500 to 1008', 2000, 1500, 1008, true],
    ['upscale 300x200 to 1008', 300, 200, 1008, false],
  ];
  for (const [name, width, height, size, smooth] of cases) {
    test(`${name}: bit-identical`, () => {
      const input = path.join(workDir, `${name.replace(/\W+/g, '_')}.rgb`);
      writeFileSync(input, pixels(width, height, width * 31 + height, smooth));
      const native = `${input}.native`;
      const reference = `${input}.reference`;
      execFileSync(cli, ['resize', input, String(width), String(height), String(size), native]);
      execFileSync(python, [
        '-c',
        REFERENCE,
        input,
        String(width),
        String(height),
        String(size),
        reference,
      ]);
      const actual = readFileSync(native);
      const expected = readFileSync(reference);
      assert.equal(actual.length, 3 * size * size);
      assert.ok(actual.equals(expected), 'resized bytes differ from torch');
    });
  }

  test('pixel_values: ToDtype(float32, scale=True) then Normalize, bit-identical', () => {
    const [width, height, size] = [123, 77, 224];
    const mean = '0.485,0.456,0.406';
    const std = '0.229,0.224,0.225';
    const input = path.join(workDir, 'normalize.rgb');
    writeFileSync(input, pixels(width, height, 99, false));
    const native = `${input}.native`;
    const reference = `${input}.reference`;
    const args = [input, String(width), String(height), String(size)];
    execFileSync(cli, ['preprocess', ...args, native, '--mean', mean, '--std', std]);
    execFileSync(python, ['-c', REFERENCE, ...args, reference, mean, std]);
    const actual = readFileSync(native);
    assert.equal(actual.length, 3 * size * size * 4);
    assert.ok(actual.equals(readFileSync(`${reference}.pixels`)), 'pixel_values differ');
  });
});
