/**
 * COCO run-length encoding, read side (pycocotools' rleFrString + rleDecode).
 *
 * A mask is `{size: [height, width], counts}`: run lengths over the pixels in column-major
 * order (x outer, y inner), alternating background and foreground, background first (so a
 * mask starting with foreground has a leading 0). `counts` is the compressed string form: each
 * run is a signed LEB128-like number in 6-bit chunks offset by 48 ('0'), and from the fourth
 * run on the value is stored as a difference from the run two places before.
 */

export interface CocoRle {
  /** [height, width] in pixels. */
  size: [number, number];
  counts: string;
}

/** A malformed RLE: bad size, bad characters, or runs that do not cover the mask exactly. */
export class RleDecodeError extends Error {
  override readonly name = 'RleDecodeError';
}

/** Chunk characters are '0' (48) + a 6-bit value: 5 data bits, 0x20 = more chunks follow. */
const CHUNK_OFFSET = 48;
const CHUNK_LIMIT = 64;
/**
 * Six chunks carry 30 bits, enough for any run in a mask of up to 2^29 pixels; a longer token
 * would overflow JavaScript's 32-bit shifts, where pycocotools (64-bit) would not.
 */
const MAX_CHUNKS = 6;

/** Compressed counts string -> run lengths (background first), as pycocotools rleFrString. */
export function parseRleCounts(counts: string): number[] {
  const runs: number[] = [];
  let position = 0;
  while (position < counts.length) {
    let value = 0;
    let chunkIndex = 0;
    let more = true;
    while (more) {
      if (position >= counts.length) throw new RleDecodeError('RLE counts string is truncated');
      if (chunkIndex >= MAX_CHUNKS) throw new RleDecodeError('RLE count is too large');
      const chunk = counts.charCodeAt(position) - CHUNK_OFFSET;
      if (chunk < 0 || chunk >= CHUNK_LIMIT) {
        throw new RleDecodeError(`RLE counts has an invalid character at ${position}`);
      }
      value |= (chunk & 0x1f) << (5 * chunkIndex);
      more = (chunk & 0x20) !== 0;
      position += 1;
      chunkIndex += 1;
      // Sign bit of the last chunk: the value is negative (only differences can be).
      if (!more && (chunk & 0x10) !== 0) value |= -1 << (5 * chunkIndex);
    }
    if (runs.length > 2) value += runs[runs.length - 2];
    if (value < 0) throw new RleDecodeError(`RLE run ${runs.length} is negative`);
    runs.push(value);
  }
  return runs;
}

function checkedSize(rle: CocoRle): { height: number; width: number } {
  const [height, width] = rle.size;
  if (!Number.isSafeInteger(height) || !Number.isSafeInteger(width) || height < 0 || width < 0) {
    throw new RleDecodeError(`RLE size ${JSON.stringify(rle.size)} is not [height, width]`);
  }
  return { height, width };
}

/**
 * Calls `visit(x, yStart, yEnd)` for every vertical span of foreground pixels: column x, rows
 * yStart (inclusive) to yEnd (exclusive), in column-major order. Nothing is allocated per pixel,
 * so a caller can paint a mask in O(foreground pixels) without decoding it to a dense array.
 * Throws RleDecodeError (possibly after some spans were visited) when the runs do not cover
 * exactly height x width pixels.
 */
export function forEachForegroundSpan(
  rle: CocoRle,
  visit: (x: number, yStart: number, yEnd: number) => void,
): void {
  const { height, width } = checkedSize(rle);
  const total = height * width;
  const runs = parseRleCounts(rle.counts);
  let offset = 0;
  for (let index = 0; index < runs.length; index += 1) {
    const end = offset + runs[index];
    if (end > total) throw new RleDecodeError('RLE runs exceed the mask size');
    // Odd runs are foreground; a run may wrap over several columns.
    if (index % 2 === 1) {
      let start = offset;
      while (start < end) {
        const x = Math.floor(start / height);
        const columnEnd = Math.min(end, (x + 1) * height);
        const yStart = start - x * height;
        visit(x, yStart, yStart + (columnEnd - start));
        start = columnEnd;
      }
    }
    offset = end;
  }
  if (offset !== total) throw new RleDecodeError('RLE runs do not cover the mask');
}

/** Decodes to a row-major height x width mask of 0/1 bytes (pycocotools.mask.decode, transposed). */
export function decodeRle(rle: CocoRle): Uint8Array {
  const { width } = checkedSize(rle);
  const mask = new Uint8Array(rle.size[0] * width);
  forEachForegroundSpan(rle, (x, yStart, yEnd) => {
    for (let y = yStart; y < yEnd; y += 1) mask[y * width + x] = 1;
  });
  return mask;
}
