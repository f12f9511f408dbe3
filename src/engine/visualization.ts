/**
 * Segmentation overlays (`return_visualization`): the image with each instance's mask tinted,
 * its box outlined and a "<label> <score>" tag, written as a PNG under OUTPUT_DIR and served
 * back by name (src/server/routes/visualizations.ts).
 *
 * Pixel work is done in place on a copy of the raw RGB buffer, walking the COCO RLE runs
 * directly (O(foreground pixels) per instance, no dense mask). Labels are small SVG tiles
 * rasterized and composited by sharp (librsvg + Pango); if that fails the overlay is written
 * without labels rather than not at all.
 *
 * Files are named by 128 random bits, so a URL cannot be guessed from another, and live at
 * most maxAgeMs; at most maxFiles are kept (oldest removed first). Only names matching
 * VISUALIZATION_FILE_NAME are ever read or deleted, so OUTPUT_DIR may hold other files.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { lstat, mkdir, open, readdir, stat, unlink, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import sharp, { type OverlayOptions } from 'sharp';
import type { Logger } from '../logging';
import { forEachForegroundSpan, type CocoRle } from './coco-rle';
import type { DecodedImage } from './image-decoder';

/** 32 lowercase hex digits (128 random bits) + ".png": the only names this store owns. */
export const VISUALIZATION_FILE_NAME = /^[0-9a-f]{32}\.png$/;
/** URL path under which the server serves a visualization file by its name. */
export const VISUALIZATION_URL_PREFIX = '/api/v1/visualizations/';

export type Rgb = readonly [number, number, number];

/**
 * Distinct colours (Sasha Trubetskoy's list), used in order by instance index and cycled;
 * the first ones are the most distinguishable.
 */
export const VISUALIZATION_PALETTE: readonly Rgb[] = [
  [230, 25, 75],
  [60, 180, 75],
  [255, 225, 25],
  [0, 130, 200],
  [245, 130, 48],
  [145, 30, 180],
  [70, 240, 240],
  [240, 50, 230],
  [210, 245, 60],
  [250, 190, 212],
  [0, 128, 128],
  [220, 190, 255],
];

/** Opacity of the mask tint: output = input x (1 - alpha) + colour x alpha. */
export const MASK_ALPHA = 0.45;
/** Box outline width, pixels, drawn inside the box. */
export const BOX_LINE_PX = 2;
/** Longest label text (code points) drawn before it is shortened with an ellipsis. */
const MAX_LABEL_CHARS = 48;
/** Label font size in pixels: about 1/32 of the shorter image side, within these bounds. */
const MIN_FONT_PX = 10;
const MAX_FONT_PX = 28;

const BYTES_PER_PIXEL = 3;
const DIRECTORY_MODE = 0o700;
const FILE_MODE = 0o600;
const MAX_SWEEP_INTERVAL_MS = 60_000;
const MIN_SWEEP_INTERVAL_MS = 1_000;

/** What an overlay is drawn from: a SegmentResult's per-instance arrays, all the same length. */
export interface VisualizationInput {
  /** COCO RLE at the image's resolution (size [height, width]). */
  masks: readonly CocoRle[];
  /** Normalized [cx, cy, w, h] per instance. */
  boxes: readonly (readonly number[])[];
  labels: readonly string[];
  /** Probabilities in [0, 1]. */
  scores: readonly number[];
}

export interface RenderedVisualization {
  /** 32 hex digits + ".png". */
  fileName: string;
  /** Where the server serves it: /api/v1/visualizations/<fileName>. */
  urlPath: string;
}

/** An open visualization file; the caller owns the handle and must close it (or stream it). */
export interface OpenedVisualization {
  handle: FileHandle;
  /** Bytes. */
  size: number;
}

/** Inclusive pixel rectangle. */
interface PixelRect {
  left: number;
  top: number;
  right: number;
  bottom: number;
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

function tintMask(pixels: Buffer, width: number, mask: CocoRle, table: Uint8Array): void {
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
function boxPixels(box: readonly number[], width: number, height: number): PixelRect | null {
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

function fillRect(pixels: Buffer, width: number, rect: PixelRect, colour: Rgb): void {
  for (let y = rect.top; y <= rect.bottom; y += 1) {
    let offset = (y * width + rect.left) * BYTES_PER_PIXEL;
    for (let x = rect.left; x <= rect.right; x += 1, offset += BYTES_PER_PIXEL) {
      pixels[offset] = colour[0];
      pixels[offset + 1] = colour[1];
      pixels[offset + 2] = colour[2];
    }
  }
}

function outlineRect(pixels: Buffer, width: number, rect: PixelRect, colour: Rgb): void {
  const line = BOX_LINE_PX - 1;
  const { left, top, right, bottom } = rect;
  fillRect(pixels, width, { left, top, right, bottom: Math.min(bottom, top + line) }, colour);
  fillRect(pixels, width, { left, top: Math.max(top, bottom - line), right, bottom }, colour);
  fillRect(pixels, width, { left, top, right: Math.min(right, left + line), bottom }, colour);
  fillRect(pixels, width, { left: Math.max(left, right - line), top, right, bottom }, colour);
}

/**
 * Control characters, non-characters and lone surrogates: XML 1.0 cannot carry most of them
 * (librsvg would refuse the whole tile), and a tag is one line anyway.
 */
const XML_UNSAFE =
  // eslint-disable-next-line no-control-regex
  /[\u0000-\u001f\u007f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

/** The label as drawn: controls become spaces, long text is shortened, score has 2 decimals. */
export function labelText(label: string, score: number): string {
  const characters = Array.from(label.replace(XML_UNSAFE, ' ').trim());
  const name =
    characters.length > MAX_LABEL_CHARS
      ? `${characters.slice(0, MAX_LABEL_CHARS - 1).join('')}\u2026`
      : characters.join('');
  return Number.isFinite(score) ? `${name} ${score.toFixed(2)}`.trim() : name;
}

/** Rough advance width in em of sans-serif text: wide for CJK and other full-width scripts. */
function estimatedWidthEm(text: string): number {
  let em = 0;
  for (const character of text) em += (character.codePointAt(0) ?? 0) >= 0x2e80 ? 1 : 0.62;
  return em;
}

/** Black text on light tag colours, white on dark ones (Rec. 601 luma). */
function textColourOn(colour: Rgb): string {
  return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 150 ? '#000' : '#fff';
}

/** A label tag (filled rectangle + text) as an SVG overlay, placed at the box's top-left. */
function labelOverlay(
  text: string,
  colour: Rgb,
  rect: PixelRect,
  imageWidth: number,
  imageHeight: number,
): OverlayOptions {
  const fontSize = clamp(
    Math.round(Math.min(imageWidth, imageHeight) / 32),
    MIN_FONT_PX,
    MAX_FONT_PX,
  );
  const padding = Math.max(2, Math.round(fontSize * 0.2));
  // sharp refuses an overlay larger than the image; a tag that does not fit is cut.
  const width = Math.min(imageWidth, Math.ceil(estimatedWidthEm(text) * fontSize) + 2 * padding);
  const height = Math.min(imageHeight, fontSize + 2 * padding);
  // Above the box when there is room, else just inside its top edge.
  const top = rect.top - height >= 0 ? rect.top - height : Math.min(rect.top, imageHeight - height);
  const left = Math.min(rect.left, imageWidth - width);
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
    `<rect width="${width}" height="${height}" fill="rgb(${colour.join(',')})"/>` +
    `<text x="${padding}" y="${padding + Math.round(fontSize * 0.8)}" font-family="sans-serif" ` +
    `font-size="${fontSize}" fill="${textColourOn(colour)}">${escapeXml(text)}</text></svg>`;
  return { input: Buffer.from(svg), left, top };
}

/** Whether this sharp build can rasterize SVG (librsvg); without it labels are skipped. */
const SVG_SUPPORTED = sharp.format.svg?.input.buffer === true;

/**
 * RGB pixels + overlays -> PNG bytes. When compositing the overlays fails (no usable SVG
 * renderer or fonts), the PNG is encoded without them and a warning is logged.
 */
export async function encodeVisualizationPng(
  pixels: Buffer,
  width: number,
  height: number,
  overlays: readonly OverlayOptions[],
  logger: Logger,
): Promise<Buffer> {
  const raw = { raw: { width, height, channels: BYTES_PER_PIXEL } } as const;
  if (overlays.length > 0) {
    try {
      // Compositing adds an alpha channel; every output pixel is opaque, so drop it again.
      return await sharp(pixels, raw)
        .composite([...overlays])
        .removeAlpha()
        .png()
        .toBuffer();
    } catch (error) {
      logger.warn('visualization labels could not be rendered; writing the overlay without them', {
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }
  return sharp(pixels, raw).png().toBuffer();
}

/**
 * Draws the overlay on a copy of `image` (the caller's pixels are never modified) and encodes
 * it as PNG. Masks are tinted in instance order, then boxes are outlined, then labels tagged,
 * so later instances tint over earlier ones and no tint covers a box line or a label.
 */
export async function renderVisualizationPng(
  image: DecodedImage,
  input: VisualizationInput,
  logger: Logger,
): Promise<Buffer> {
  const { width, height } = image;
  const count = input.masks.length;
  if (
    input.boxes.length !== count ||
    input.labels.length !== count ||
    input.scores.length !== count
  ) {
    throw new Error(
      `visualization input lengths differ: ${count} masks, ${input.boxes.length} boxes, ` +
        `${input.labels.length} labels, ${input.scores.length} scores`,
    );
  }
  if (image.data.length !== width * height * BYTES_PER_PIXEL) {
    throw new Error(`image buffer of ${image.data.length} bytes is not ${width}x${height} RGB`);
  }
  const pixels = Buffer.from(image.data);
  const colours = Array.from(
    { length: count },
    (_, index) => VISUALIZATION_PALETTE[index % VISUALIZATION_PALETTE.length],
  );

  input.masks.forEach((mask, index) => {
    if (mask.size[0] !== height || mask.size[1] !== width) {
      throw new Error(
        `mask ${index} is ${mask.size[1]}x${mask.size[0]}, the image ${width}x${height}`,
      );
    }
    tintMask(pixels, width, mask, tintTable(colours[index]));
  });

  const overlays: OverlayOptions[] = [];
  input.boxes.forEach((box, index) => {
    const rect = boxPixels(box, width, height);
    if (rect === null) return;
    outlineRect(pixels, width, rect, colours[index]);
    const text = labelText(input.labels[index], input.scores[index]);
    if (SVG_SUPPORTED && text !== '') {
      overlays.push(labelOverlay(text, colours[index], rect, width, height));
    }
  });

  return encodeVisualizationPng(pixels, width, height, overlays, logger);
}

export interface VisualizationStoreOptions {
  /** OUTPUT_DIR; created (mode 0700) by init() when missing. */
  outputDir: string;
  /** Most files kept; the oldest beyond it are deleted (OUTPUT_MAX_FILES). */
  maxFiles: number;
  /** A file older than this is deleted (OUTPUT_MAX_AGE_SECONDS x 1000), milliseconds. */
  maxAgeMs: number;
  logger: Logger;
  /** Period of the background sweep, milliseconds; default min(60 s, maxAgeMs), at least 1 s. */
  sweepIntervalMs?: number;
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** Opening a visualization: O_NOFOLLOW so a planted symlink is never served, O_NONBLOCK so a
 * planted FIFO cannot hang a thread (both are no-ops for the regular files this store writes). */
const OPEN_FLAGS =
  fsConstants.O_RDONLY | (fsConstants.O_NOFOLLOW ?? 0) | (fsConstants.O_NONBLOCK ?? 0);
/** Errors of open() that mean "there is no such visualization" rather than a server fault. */
const NOT_A_VISUALIZATION = new Set(['ENOENT', 'ELOOP', 'ENOTDIR', 'EISDIR', 'ENXIO']);

export class VisualizationStore {
  readonly outputDir: string;
  private readonly maxFiles: number;
  private readonly maxAgeMs: number;
  private readonly logger: Logger;
  private readonly sweepIntervalMs: number;
  /** Known files -> modification time (ms since epoch), oldest first. */
  private readonly files = new Map<string, number>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private runningSweep: Promise<void> | null = null;
  private initialized = false;

  constructor(options: VisualizationStoreOptions) {
    if (!Number.isInteger(options.maxFiles) || options.maxFiles < 1) {
      throw new RangeError(`maxFiles must be a positive integer, got ${options.maxFiles}`);
    }
    if (!(options.maxAgeMs > 0)) {
      throw new RangeError(`maxAgeMs must be > 0, got ${options.maxAgeMs}`);
    }
    this.outputDir = path.resolve(options.outputDir);
    this.maxFiles = options.maxFiles;
    this.maxAgeMs = options.maxAgeMs;
    this.logger = options.logger;
    this.sweepIntervalMs =
      options.sweepIntervalMs ??
      clamp(options.maxAgeMs, MIN_SWEEP_INTERVAL_MS, MAX_SWEEP_INTERVAL_MS);
  }

  /**
   * Creates the directory (mode 0700 when it is new), deletes visualizations of earlier runs
   * that are past maxAgeMs or beyond maxFiles (unexpired ones stay servable across a restart,
   * and several workers may share the directory), and starts the background sweep.
   */
  async init(): Promise<void> {
    await mkdir(this.outputDir, { recursive: true, mode: DIRECTORY_MODE });
    const directory = await stat(this.outputDir);
    if (!directory.isDirectory())
      throw new Error(`OUTPUT_DIR ${this.outputDir} is not a directory`);
    const ownUid = process.getuid?.();
    if ((ownUid !== undefined && directory.uid !== ownUid) || (directory.mode & 0o022) !== 0) {
      this.logger.warn(
        'OUTPUT_DIR is owned by another user or writable by others; visualizations there ' +
          'can be replaced or deleted by them',
        { outputDir: this.outputDir, mode: (directory.mode & 0o777).toString(8) },
      );
    }
    this.initialized = true;
    await this.sweep();
    if (this.sweepTimer === null) {
      this.sweepTimer = setInterval(() => {
        this.sweep().catch((error: unknown) => {
          this.logger.warn('visualization sweep failed', { error: String(error) });
        });
      }, this.sweepIntervalMs);
      this.sweepTimer.unref();
    }
  }

  /** Stops the background sweep. Files stay; render() and open() keep working. */
  close(): void {
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
  }

  /** Draws the overlay, writes it as a new PNG, then enforces the age and count limits. */
  async render(image: DecodedImage, input: VisualizationInput): Promise<RenderedVisualization> {
    if (!this.initialized) throw new Error('VisualizationStore.init() was not called');
    const png = await renderVisualizationPng(image, input, this.logger);
    const fileName = `${randomBytes(16).toString('hex')}.png`;
    // 'wx': never overwrite (or follow a symlink planted at) an existing name.
    await writeFile(path.join(this.outputDir, fileName), png, { flag: 'wx', mode: FILE_MODE });
    this.files.set(fileName, Date.now());
    await this.trim();
    return { fileName, urlPath: `${VISUALIZATION_URL_PREFIX}${fileName}` };
  }

  /**
   * Opens a visualization for reading; null when the name is not one of ours, the file is
   * missing or not a regular file, or it has expired (even if the sweep has not yet run).
   */
  async open(fileName: string): Promise<OpenedVisualization | null> {
    if (!VISUALIZATION_FILE_NAME.test(fileName)) return null;
    let handle: FileHandle;
    try {
      handle = await open(path.join(this.outputDir, fileName), OPEN_FLAGS);
    } catch (error) {
      if (NOT_A_VISUALIZATION.has(errorCode(error) ?? '')) return null;
      throw error;
    }
    try {
      const stats = await handle.stat();
      if (!stats.isFile() || Date.now() - stats.mtimeMs > this.maxAgeMs) {
        await handle.close();
        return null;
      }
      return { handle, size: stats.size };
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /**
   * Re-reads the directory (other processes may share it), then deletes expired files and
   * the oldest beyond maxFiles. Concurrent calls share one pass.
   */
  sweep(): Promise<void> {
    this.runningSweep ??= this.sweepDirectory().finally(() => {
      this.runningSweep = null;
    });
    return this.runningSweep;
  }

  private async sweepDirectory(): Promise<void> {
    const startedAt = Date.now();
    const names = (await readdir(this.outputDir)).filter((name) =>
      VISUALIZATION_FILE_NAME.test(name),
    );
    const found = await Promise.all(
      names.map(async (name): Promise<[string, number] | null> => {
        try {
          const stats = await lstat(path.join(this.outputDir, name));
          return stats.isDirectory() ? null : [name, stats.mtimeMs];
        } catch (error) {
          if (errorCode(error) === 'ENOENT') return null;
          throw error;
        }
      }),
    );
    const entries = new Map(found.filter((entry) => entry !== null));
    // Files this process wrote after the directory was listed.
    for (const [name, modifiedAt] of this.files) {
      if (modifiedAt >= startedAt && !entries.has(name)) entries.set(name, modifiedAt);
    }
    const oldestFirst = [...entries].sort(
      ([nameA, timeA], [nameB, timeB]) => timeA - timeB || (nameA < nameB ? -1 : 1),
    );
    this.files.clear();
    for (const [name, modifiedAt] of oldestFirst) this.files.set(name, modifiedAt);
    await this.trim();
  }

  /** Deletes, oldest first, files past maxAgeMs and those beyond maxFiles. Never throws. */
  private async trim(): Promise<void> {
    const now = Date.now();
    const doomed: string[] = [];
    for (const [name, modifiedAt] of this.files) {
      const overCount = this.files.size - doomed.length > this.maxFiles;
      if (!overCount && now - modifiedAt <= this.maxAgeMs) break;
      doomed.push(name);
    }
    for (const name of doomed) this.files.delete(name);
    await Promise.all(
      doomed.map(async (name) => {
        try {
          await unlink(path.join(this.outputDir, name));
        } catch (error) {
          if (errorCode(error) !== 'ENOENT') {
            this.logger.warn('could not delete an old visualization', {
              fileName: name,
              error: String(error),
            });
          }
        }
      }),
    );
  }
}
