/**
 * COCO RLE helpers for tests: decoding is the production decoder (src/engine/coco-rle.ts), so
 * masks returned by the server can be compared pixel by pixel without a Python round trip.
 */
export { decodeRle, type CocoRle } from '../../src/engine/coco-rle';

/** Intersection over union of two binary masks; two empty masks count as identical (1). */
export function maskIou(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) throw new Error('masks differ in size');
  let intersection = 0;
  let union = 0;
  for (let i = 0; i < a.length; i += 1) {
    intersection += a[i] & b[i];
    union += a[i] | b[i];
  }
  return union === 0 ? 1 : intersection / union;
}
