/**
 * Drawing on the stage's layers: masks on one canvas (only masks, so that a test can compare
 * its pixels with the response's RLE), clicks and boxes on another.
 */
import { decodeRle, type Bitmap } from '../../../clients/typescript/src/index';

/** An RGB colour per result or object, distinct for the first dozen, stable for an id. */
const PALETTE: readonly [number, number, number][] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [188, 189, 34],
  [23, 190, 207],
  [255, 187, 120],
  [152, 223, 138],
  [174, 199, 232],
];

export function colorOf(index: number): [number, number, number] {
  return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

export function cssColor(index: number, alpha = 1): string {
  const [r, g, b] = colorOf(index);
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

/** Alpha of a mask pixel: the frame stays visible under it. */
const MASK_ALPHA = 140;

export interface ColoredMask {
  rle: { size: [number, number]; counts: string };
  /** Index into the palette (a result's position, an object's id). */
  color: number;
}

/**
 * Resizes `canvas` to width x height and paints every mask in its colour (a later mask over an
 * earlier one); pixels outside every mask stay fully transparent.
 */
export function drawMasks(
  canvas: HTMLCanvasElement,
  width: number,
  height: number,
  masks: readonly ColoredMask[],
): void {
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d');
  if (context === null) return;
  const image = context.createImageData(width, height);
  for (const { rle, color } of masks) {
    const bitmap: Bitmap = decodeRle(rle);
    if (bitmap.width !== width || bitmap.height !== height) continue;
    const [r, g, b] = colorOf(color);
    for (let i = 0; i < bitmap.data.length; i++) {
      if (bitmap.data[i] === 0) continue;
      const o = i * 4;
      image.data[o] = r;
      image.data[o + 1] = g;
      image.data[o + 2] = b;
      image.data[o + 3] = MASK_ALPHA;
    }
  }
  context.putImageData(image, 0, 0);
}

export interface Click {
  /** Normalized [x, y]. */
  point: [number, number];
  positive: boolean;
}

export interface BoxMark {
  /** Normalized [cx, cy, w, h]. */
  box: [number, number, number, number];
  positive: boolean;
  /** Palette index of the outline; positive/negative colours when absent. */
  color?: number;
  label?: string;
}

/**
 * Clicks as dots (green positive, red negative) and boxes as outlines, over the masks. The
 * canvas takes the size it is shown at (device pixels), so marks stay sharp and of constant
 * size on a small picture scaled up.
 */
export function drawMarks(
  canvas: HTMLCanvasElement,
  clicks: readonly Click[],
  boxes: readonly BoxMark[],
): void {
  const rect = canvas.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(rect.width * ratio));
  const height = Math.max(1, Math.round(rect.height * ratio));
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d');
  if (context === null) return;
  context.lineWidth = 2 * ratio;
  context.font = `${12 * ratio}px system-ui, sans-serif`;
  for (const { box, positive, color, label } of boxes) {
    const [cx, cy, w, h] = box;
    const stroke = color === undefined ? (positive ? '#2ecc40' : '#ff4136') : cssColor(color, 1);
    context.strokeStyle = stroke;
    context.setLineDash(positive ? [] : [6 * ratio, 4 * ratio]);
    context.strokeRect((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height);
    if (label !== undefined) {
      context.fillStyle = stroke;
      const top = (cy - h / 2) * height;
      // Above the box, or inside it where the box touches the top edge.
      const baseline = top >= 14 * ratio ? top - 3 * ratio : top + 13 * ratio;
      context.fillText(label, (cx - w / 2) * width + 3 * ratio, baseline);
    }
  }
  context.setLineDash([]);
  for (const { point, positive } of clicks) {
    context.beginPath();
    context.arc(point[0] * width, point[1] * height, 5 * ratio, 0, 2 * Math.PI);
    context.fillStyle = positive ? '#2ecc40' : '#ff4136';
    context.fill();
    context.strokeStyle = '#ffffff';
    context.lineWidth = 1.5 * ratio;
    context.stroke();
  }
}
