/**
 * COCO compressed RLE (pycocotools) to a bitmap.
 *
 * A mask is {size: [height, width], counts}: run lengths over the pixels in column-major order
 * (down each column, columns left to right), alternating background and foreground, starting
 * with background (a mask whose first pixel is foreground starts with a 0 run). `counts` packs
 * each run into 5-bit groups, least significant first, each group a character '0' + value
 * (0x20 set: another group follows; 0x10 in the last group: the number is negative); from the
 * third run on, the number stored is the difference to the run two places before.
 */

/** A decoded mask: `data[y * width + x]` is 1 inside the mask, 0 outside (row-major). */
export interface Bitmap {
  width: number;
  height: number;
  data: Uint8Array;
}

/** A malformed RLE (bad size or characters, runs that do not cover the mask exactly). */
export class RleDecodeError extends Error {
  override readonly name = 'RleDecodeError';
}

const CHAR_OFFSET = 48;
const CHAR_LIMIT = 64;
/** 6 groups of 5 bits: 30 bits, every run of a mask up to 2^29 pixels (JS shifts are 32-bit). */
const MAX_GROUPS = 6;

/** The run lengths of a compressed counts string (background first). */
export function rleRuns(counts: string): number[] {
  const runs: number[] = [];
  let position = 0;
  while (position < counts.length) {
    let value = 0;
    let group = 0;
    let more = true;
    while (more) {
      if (position >= counts.length) throw new RleDecodeError('RLE counts are truncated');
      if (group >= MAX_GROUPS) throw new RleDecodeError('RLE run is too long');
      const bits = counts.charCodeAt(position) - CHAR_OFFSET;
      if (bits < 0 || bits >= CHAR_LIMIT) {
        throw new RleDecodeError(`RLE counts: invalid character at ${position}`);
      }
      value |= (bits & 0x1f) << (5 * group);
      more = (bits & 0x20) !== 0;
      position += 1;
      group += 1;
      if (!more && (bits & 0x10) !== 0) value |= -1 << (5 * group);
    }
    if (runs.length > 2) value += runs[runs.length - 2];
    if (value < 0) throw new RleDecodeError(`RLE run ${runs.length} is negative`);
    runs.push(value);
  }
  return runs;
}

/** Decodes a COCO compressed RLE (column-major) to a row-major bitmap of 0 and 1. */
export function decodeRle(rle: { size: readonly [number, number]; counts: string }): Bitmap {
  const [height, width] = rle.size;
  if (!Number.isSafeInteger(height) || !Number.isSafeInteger(width) || height < 0 || width < 0) {
    throw new RleDecodeError(`RLE size ${JSON.stringify(rle.size)} is not [height, width]`);
  }
  const total = height * width;
  const data = new Uint8Array(total);
  const runs = rleRuns(rle.counts);
  let offset = 0;
  for (let index = 0; index < runs.length; index += 1) {
    const end = offset + runs[index];
    if (end > total) throw new RleDecodeError('RLE runs exceed the mask size');
    if (index % 2 === 1) {
      // Foreground from `offset` to `end` (column-major), possibly over several columns.
      let x = Math.floor(offset / height);
      let y = offset - x * height;
      for (let i = offset; i < end; i += 1) {
        data[y * width + x] = 1;
        y += 1;
        if (y === height) {
          y = 0;
          x += 1;
        }
      }
    }
    offset = end;
  }
  if (offset !== total) throw new RleDecodeError('RLE runs do not cover the mask');
  return { width, height, data };
}
