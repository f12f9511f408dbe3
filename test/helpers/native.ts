/** Shared pieces of the native addon tests. */
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { NativeError } from '../../src/native/errors';
import type { NativeErrorCode } from '../../src/native/types';

/** An assert.rejects predicate: a NativeError with this code (and message, if given). */
export function expectCode(code: NativeErrorCode, message?: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof NativeError, `expected a NativeError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  };
}

/**
 * Full garbage collections (the test runner does not pass --expose-gc), each followed by a
 * turn of the event loop so that native finalizers run.
 */
export async function collectGarbage(rounds = 5): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  for (let round = 0; round < rounds; round++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Normalized cx, cy, w, h of the foreground of a row-major mask, pixel edges (a pixel at
 * column x spans x / W .. (x + 1) / W), rounded to float32 as the engine returns boxes; zeros
 * for an empty mask.
 */
export function maskBox(mask: Uint8Array, height: number, width: number): number[] {
  let minX = width;
  let maxX = -1;
  let minY = height;
  let maxY = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (mask[y * width + x] === 0) continue;
      minX = Math.min(minX, x);
      maxX = Math.max(maxX, x);
      minY = Math.min(minY, y);
      maxY = Math.max(maxY, y);
    }
  }
  if (maxX < 0) return [0, 0, 0, 0];
  const [x0, x1, y0, y1] = [minX / width, (maxX + 1) / width, minY / height, (maxY + 1) / height];
  return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0].map(Math.fround);
}
