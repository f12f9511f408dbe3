/**
 * The per-pixel part of a visualization (mask tints and box outlines), run in a worker thread
 * (piscina, started by visualization.ts) so that an overlay of a large image never blocks the
 * event loop: walking the RLE runs of ten masks on a 12 MP image is hundreds of milliseconds
 * of JavaScript. The pixels travel both ways by transfer, not copy.
 *
 * This module is also imported by visualization.ts for its geometry (boxPixels) and
 * constants; it must stay free of sharp and of anything else heavy to load in a worker.
 */
import { move } from 'piscina';
import { forEachForegroundSpan, type CocoRle } from './coco-rle';

export type Rgb = readonly [number, number, number];

/** Inclusive pixel rectangle. */
export interface PixelRect {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

/** Opacity of the mask tint: output = input x (1 - alpha) + colour x alpha. */
export const MASK_ALPHA = 0.45;
/** Box outline width, pixels, drawn inside the box. */
export const BOX_LINE_PX = 2;
export const BYTES_PER_PIXEL = 3;

/** One overlay to draw: masks tinted in order, then box outlines (null: box off the image). */
export interface DrawTask {
  /** width x height RGB, transferred to the worker and back. */
  pixels: ArrayBuffer;
  width: number;
  height: number;
  masks: readonly CocoRle[];
  rects: readonly (PixelRect | null)[];
  colours: readonly Rgb[];
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
}

/** Per-channel lookup table of the tint: table[channel * 256 + value] -> blended value. */
function tintTable(colour: Rgb): Uint8Array {
  const table = new Uint8Array(3 * 256);
  for (let channel = 0; channel < 3; channel += 1) {
    for (let value = 0; value < 256; value += 1) {
      table[channel * 256 + value] = Math.round(
        value * (1 - MASK_ALPHA) + colour[channel] * MASK_ALPHA,
      );
    }
  }
  return table;
}

/** Tints the mask's pixels in place: O(foreground pixels), no dense mask. */
function tintMask(pixels: Uint8Array, width: number, mask: CocoRle, table: Uint8Array): void {
  const rowStride = width * BYTES_PER_PIXEL;
  forEachForegroundSpan(mask, (x, yStart, yEnd) => {
    let offset = (yStart * width + x) * BYTES_PER_PIXEL;
    for (let y = yStart; y < yEnd; y += 1, offset += rowStride) {
      pixels[offset] = table[pixels[offset]];
      pixels[offset + 1] = table[256 + pixels[offset + 1]];
      pixels[offset + 2] = table[512 + pixels[offset + 2]];
    }
  });
}

/** Normalized [cx, cy, w, h] -> the pixels it covers, or null when it misses the image. */
export function boxPixels(box: readonly number[], width: number, height: number): PixelRect | null {
  if (box.length !== 4 || !box.every(Number.isFinite)) return null;
  const [cx, cy, w, h] = box;
  // Box edges are pixel edges: a box of a mask spanning columns a..b has x0 = a/W, x1 = (b+1)/W.
  const x0 = Math.round((cx - w / 2) * width);
  const x1 = Math.round((cx + w / 2) * width);
  const y0 = Math.round((cy - h / 2) * height);
  const y1 = Math.round((cy + h / 2) * height);
  if (x1 <= 0 || y1 <= 0 || x0 >= width || y0 >= height) return null;
  const left = clamp(x0, 0, width - 1);
  const top = clamp(y0, 0, height - 1);
  return {
    left,
    top,
    right: clamp(x1 - 1, left, width - 1),
    bottom: clamp(y1 - 1, top, height - 1),
  };
}

function fillRect(pixels: Uint8Array, width: number, rect: PixelRect, colour: Rgb): void {
  for (let y = rect.top; y <= rect.bottom; y += 1) {
    const start = (y * width + rect.left) * BYTES_PER_PIXEL;
    const end = (y * width + rect.right + 1) * BYTES_PER_PIXEL;
    for (let offset = start; offset < end; offset += BYTES_PER_PIXEL) {
      pixels[offset] = colour[0];
      pixels[offset + 1] = colour[1];
      pixels[offset + 2] = colour[2];
    }
  }
}

function outlineRect(pixels: Uint8Array, width: number, rect: PixelRect, colour: Rgb): void {
  const line = BOX_LINE_PX - 1;
  const { left, top, right, bottom } = rect;
  fillRect(pixels, width, { left, top, right, bottom: Math.min(bottom, top + line) }, colour);
  fillRect(pixels, width, { left, top: Math.max(top, bottom - line), right, bottom }, colour);
  fillRect(pixels, width, { left, top, right: Math.min(right, left + line), bottom }, colour);
  fillRect(pixels, width, { left: Math.max(left, right - line), top, right, bottom }, colour);
}

/**
 * Draws in place: masks tinted in instance order (later ones over earlier ones), then every
 * box outlined, so no tint covers a box line. Returns the same buffer.
 */
export function drawOverlay(task: DrawTask): ArrayBuffer {
  const pixels = new Uint8Array(task.pixels);
  if (pixels.length !== task.width * task.height * BYTES_PER_PIXEL) {
    throw new Error(`pixel buffer of ${pixels.length} bytes is not ${task.width}x${task.height}`);
  }
  task.masks.forEach((mask, index) => {
    tintMask(pixels, task.width, mask, tintTable(task.colours[index]));
  });
  task.rects.forEach((rect, index) => {
    if (rect !== null) outlineRect(pixels, task.width, rect, task.colours[index]);
  });
  return task.pixels;
}

/** The worker's entry point (named by visualization.ts): draws, then transfers the pixels back. */
export function drawInWorker(task: DrawTask): ArrayBuffer {
  return move(drawOverlay(task)) as ArrayBuffer;
}
