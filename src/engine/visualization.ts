/**
 * Segmentation overlays (`return_visualization`): the image with each instance's mask tinted,
 * its box outlined and a "<label> <score>" tag, written as a PNG under OUTPUT_DIR and served
 * back by name (src/server/routes/visualizations.ts).
 *
 * Nothing per pixel runs on the event loop: mask tints and box outlines are drawn by a worker
 * thread (visualization-worker.ts, walking the COCO RLE runs: O(foreground pixels) per
 * instance, no dense mask) on a copy of the raw RGB buffer; labels are small SVG tiles that
 * sharp rasterizes (librsvg + Pango) and composites, and sharp encodes the PNG, both on
 * libvips threads. If the labels cannot be rendered the overlay is written without them.
 *
 * Files are named by 128 random bits, so a URL cannot be guessed from another, and live at
 * most maxAgeMs; at most maxFiles and maxBytes are kept (oldest removed first, before a new
 * file is written, so the directory never holds more), and a file over maxFileBytes is not
 * written at all. Only names matching VISUALIZATION_FILE_NAME are ever read or deleted, so
 * OUTPUT_DIR may hold other files.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { lstat, mkdir, open, readdir, stat, unlink, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as setImmediatePromise } from 'node:timers/promises';
import { Piscina } from 'piscina';
import sharp, { type OverlayOptions } from 'sharp';
import type { Logger } from '../logging';
import type { CocoRle } from './coco-rle';
import type { DecodedImage } from './image-decoder';
import {
  boxPixels,
  BYTES_PER_PIXEL,
  type DrawTask,
  type PixelRect,
  type Rgb,
} from './visualization-worker';

export { BOX_LINE_PX, MASK_ALPHA, type Rgb } from './visualization-worker';

/** 32 lowercase hex digits (128 random bits) + ".png": the only names this store owns. */
export const VISUALIZATION_FILE_NAME = /^[0-9a-f]{32}\.png$/;
/** URL path under which the server serves a visualization file by its name. */
export const VISUALIZATION_URL_PREFIX = '/api/v1/visualizations/';

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

/** Longest label text (code points) drawn before it is shortened with an ellipsis. */
const MAX_LABEL_CHARS = 48;
/** Label font size in pixels: about 1/32 of the shorter image side, within these bounds. */
const MIN_FONT_PX = 10;
const MAX_FONT_PX = 28;

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

/** An open visualization file; the caller owns the handle and must close it (or stream it). */
export interface OpenedVisualization {
  handle: FileHandle;
  /** Bytes. */
  size: number;
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(high, Math.max(low, value));
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
 * Threads that draw overlays: started on demand, ended after a minute idle; idle ones never
 * hold the process open. Half the cores at most: libvips (the PNG encoder) wants the rest.
 */
const DRAW_THREADS = Math.max(1, Math.min(4, Math.floor(os.availableParallelism() / 2)));
const DRAW_IDLE_MS = 60_000;
let drawPool: Piscina<DrawTask, ArrayBuffer> | null = null;

function drawWorkers(): Piscina<DrawTask, ArrayBuffer> {
  drawPool ??= new Piscina<DrawTask, ArrayBuffer>({
    // The compiled sibling (.js), or .ts where a loader runs the sources.
    filename: path.join(__dirname, `visualization-worker${path.extname(__filename)}`),
    name: 'drawInWorker',
    minThreads: 0,
    maxThreads: DRAW_THREADS,
    idleTimeout: DRAW_IDLE_MS,
  });
  return drawPool;
}

/** Open stores sharing the drawing threads; the last one to close ends them. */
let drawPoolUsers = 0;

/** One store's claim on the drawing threads, given back by its close(). */
function useDrawWorkers(): () => Promise<void> {
  drawPoolUsers += 1;
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    drawPoolUsers -= 1;
    if (drawPoolUsers > 0) return;
    // The last store closed (shutdown): end the threads; a later render starts new ones.
    const pool = drawPool;
    drawPool = null;
    await pool?.destroy();
  };
}

/** Bytes copied between two turns of the event loop (a few milliseconds of memcpy). */
const COPY_SLICE_BYTES = 4 * 1024 * 1024;

/**
 * A copy of `source` in an ArrayBuffer of its own, to transfer to a worker. sharp's buffers
 * cannot be transferred (they would be cloned, on the event loop), and one memcpy of a 12 MP
 * image holds the loop for tens of milliseconds: the copy is made in slices between turns.
 */
async function copyYielding(source: Uint8Array): Promise<ArrayBuffer> {
  const target = new Uint8Array(source.length);
  for (let offset = 0; offset < source.length; offset += COPY_SLICE_BYTES) {
    if (offset > 0) await setImmediatePromise();
    target.set(source.subarray(offset, offset + COPY_SLICE_BYTES), offset);
  }
  return target.buffer;
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
  input.masks.forEach((mask, index) => {
    if (mask.size[0] !== height || mask.size[1] !== width) {
      throw new Error(
        `mask ${index} is ${mask.size[1]}x${mask.size[0]}, the image ${width}x${height}`,
      );
    }
  });
  const colours = Array.from(
    { length: count },
    (_, index) => VISUALIZATION_PALETTE[index % VISUALIZATION_PALETTE.length],
  );
  const rects = input.boxes.map((box) => boxPixels(box, width, height));

  const task: DrawTask = {
    pixels: await copyYielding(image.data),
    width,
    height,
    masks: input.masks.map((mask): CocoRle => ({ size: mask.size, counts: mask.counts })),
    rects,
    colours,
  };
  const drawn = await drawWorkers().run(task, { transferList: [task.pixels] });

  const overlays: OverlayOptions[] = [];
  rects.forEach((rect, index) => {
    if (rect === null) return;
    const text = labelText(input.labels[index], input.scores[index]);
    if (SVG_SUPPORTED && text !== '') {
      overlays.push(labelOverlay(text, colours[index], rect, width, height));
    }
  });
  return encodeVisualizationPng(Buffer.from(drawn), width, height, overlays, logger);
}

export interface VisualizationStoreOptions {
  /** OUTPUT_DIR; created (mode 0700) by init() when missing. */
  outputDir: string;
  /** Most files kept; the oldest beyond it are deleted (OUTPUT_MAX_FILES). */
  maxFiles: number;
  /** A file older than this is deleted (OUTPUT_MAX_AGE_SECONDS x 1000), milliseconds. */
  maxAgeMs: number;
  /** Bytes all visualizations together may take; the oldest beyond it are deleted (OUTPUT_MAX_BYTES). */
  maxBytes: number;
  /** A visualization larger than this is not stored (OUTPUT_MAX_FILE_BYTES); at most maxBytes. */
  maxFileBytes: number;
  logger: Logger;
  /** Period of the background sweep, milliseconds; default min(60 s, maxAgeMs), at least 1 s. */
  sweepIntervalMs?: number;
}

/** What render() did: the file it stored, or why it stored none. */
export type RenderedVisualization =
  | {
      stored: true;
      /** 32 hex digits + ".png". */
      fileName: string;
      /** Where the server serves it: /api/v1/visualizations/<fileName>. */
      urlPath: string;
      /** Size of the PNG. */
      bytes: number;
    }
  | {
      stored: false;
      /** For the client: the size and the limit it is over. */
      reason: string;
      bytes: number;
    };

interface StoredFile {
  /** Modification time, ms since epoch. */
  modifiedAt: number;
  bytes: number;
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** Bytes as a person reads them: "69.5 MB" (decimal units, as `ls -h --si` and browsers). */
function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} bytes`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
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
  private readonly maxBytes: number;
  private readonly maxFileBytes: number;
  private readonly logger: Logger;
  private readonly sweepIntervalMs: number;
  /** Known files (and the one being written) -> time and size, oldest first. */
  private readonly files = new Map<string, StoredFile>();
  /** Sum of `files`' sizes. */
  private storedBytes = 0;
  /** The file being written, if any: counted in `files` before it exists on disk. */
  private writing: string | null = null;
  /** Writes run one at a time: room is made for each before it is written. */
  private writeQueue: Promise<unknown> = Promise.resolve();
  /** Deletions under way; a write waits for them, so the disk never holds more than maxBytes. */
  private readonly deleting = new Set<Promise<void>>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private runningSweep: Promise<void> | null = null;
  private initialized = false;
  /** Gives back this store's claim on the shared drawing threads (close). */
  private readonly releaseDrawWorkers: () => Promise<void>;

  constructor(options: VisualizationStoreOptions) {
    if (!Number.isInteger(options.maxFiles) || options.maxFiles < 1) {
      throw new RangeError(`maxFiles must be a positive integer, got ${options.maxFiles}`);
    }
    if (!(options.maxAgeMs > 0)) {
      throw new RangeError(`maxAgeMs must be > 0, got ${options.maxAgeMs}`);
    }
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 1) {
      throw new RangeError(`maxBytes must be a positive integer, got ${options.maxBytes}`);
    }
    if (
      !Number.isSafeInteger(options.maxFileBytes) ||
      options.maxFileBytes < 1 ||
      options.maxFileBytes > options.maxBytes
    ) {
      throw new RangeError(
        `maxFileBytes must be an integer from 1 to maxBytes (${options.maxBytes}), got ` +
          `${options.maxFileBytes}`,
      );
    }
    this.outputDir = path.resolve(options.outputDir);
    this.maxFiles = options.maxFiles;
    this.maxAgeMs = options.maxAgeMs;
    this.maxBytes = options.maxBytes;
    this.maxFileBytes = options.maxFileBytes;
    this.logger = options.logger;
    this.sweepIntervalMs =
      options.sweepIntervalMs ??
      clamp(options.maxAgeMs, MIN_SWEEP_INTERVAL_MS, MAX_SWEEP_INTERVAL_MS);
    this.releaseDrawWorkers = useDrawWorkers();
  }

  /**
   * Creates the directory (mode 0700 when it is new), deletes visualizations of earlier runs
   * that are past maxAgeMs or beyond maxFiles or maxBytes (unexpired ones stay servable across
   * a restart, and several workers may share the directory), and starts the background sweep.
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

  /**
   * Stops the background sweep and ends the drawing threads. Files stay; render() (which
   * starts new threads) and open() keep working.
   */
  close(): void {
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    this.releaseDrawWorkers().catch((error: unknown) => {
      this.logger.warn('visualization workers did not stop cleanly', { error: String(error) });
    });
  }

  /** Bytes and files the store holds now (this process's view, refreshed by each sweep). */
  usage(): { files: number; bytes: number; maxBytes: number; maxFileBytes: number } {
    return {
      files: this.files.size,
      bytes: this.storedBytes,
      maxBytes: this.maxBytes,
      maxFileBytes: this.maxFileBytes,
    };
  }

  /**
   * Draws the overlay and, unless it is larger than maxFileBytes, deletes the oldest files
   * that the age, count and byte limits leave no room for, then writes it as a new PNG.
   */
  async render(image: DecodedImage, input: VisualizationInput): Promise<RenderedVisualization> {
    if (!this.initialized) throw new Error('VisualizationStore.init() was not called');
    const png = await renderVisualizationPng(image, input, this.logger);
    if (png.length > this.maxFileBytes) {
      this.logger.warn('visualization not stored: larger than OUTPUT_MAX_FILE_BYTES', {
        bytes: png.length,
        maxFileBytes: this.maxFileBytes,
      });
      return {
        stored: false,
        reason:
          `the visualization PNG is ${formatBytes(png.length)}, over the limit of ` +
          `${formatBytes(this.maxFileBytes)} per file (OUTPUT_MAX_FILE_BYTES); it was not stored`,
        bytes: png.length,
      };
    }
    const fileName = `${randomBytes(16).toString('hex')}.png`;
    const write = this.writeQueue.then(() => this.writeFile(fileName, png));
    this.writeQueue = write.catch(() => undefined);
    await write;
    return {
      stored: true,
      fileName,
      urlPath: `${VISUALIZATION_URL_PREFIX}${fileName}`,
      bytes: png.length,
    };
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
   * the oldest beyond maxFiles and maxBytes. Concurrent calls share one pass.
   */
  sweep(): Promise<void> {
    this.runningSweep ??= this.sweepDirectory().finally(() => {
      this.runningSweep = null;
    });
    return this.runningSweep;
  }

  /** Counts the file first, makes room for it, waits for the deletions, then writes it. */
  private async writeFile(fileName: string, png: Buffer): Promise<void> {
    this.writing = fileName;
    this.remember(fileName, { modifiedAt: Date.now(), bytes: png.length });
    try {
      this.trim();
      await Promise.all(this.deleting);
      // 'wx': never overwrite (or follow a symlink planted at) an existing name.
      await writeFile(path.join(this.outputDir, fileName), png, { flag: 'wx', mode: FILE_MODE });
    } catch (error) {
      this.forget(fileName);
      throw error;
    } finally {
      this.writing = null;
    }
  }

  private remember(name: string, file: StoredFile): void {
    this.forget(name);
    this.files.set(name, file);
    this.storedBytes += file.bytes;
  }

  private forget(name: string): void {
    const file = this.files.get(name);
    if (file === undefined) return;
    this.files.delete(name);
    this.storedBytes -= file.bytes;
  }

  private async sweepDirectory(): Promise<void> {
    const startedAt = Date.now();
    const names = (await readdir(this.outputDir)).filter((name) =>
      VISUALIZATION_FILE_NAME.test(name),
    );
    const found = await Promise.all(
      names.map(async (name): Promise<[string, StoredFile] | null> => {
        try {
          const stats = await lstat(path.join(this.outputDir, name));
          return stats.isDirectory()
            ? null
            : [name, { modifiedAt: stats.mtimeMs, bytes: stats.size }];
        } catch (error) {
          if (errorCode(error) === 'ENOENT') return null;
          throw error;
        }
      }),
    );
    const entries = new Map(found.filter((entry) => entry !== null));
    // Files this process wrote after the directory was listed, and the one being written.
    for (const [name, file] of this.files) {
      if ((file.modifiedAt >= startedAt || name === this.writing) && !entries.has(name)) {
        entries.set(name, file);
      }
    }
    const oldestFirst = [...entries].sort(
      ([nameA, a], [nameB, b]) => a.modifiedAt - b.modifiedAt || (nameA < nameB ? -1 : 1),
    );
    this.files.clear();
    this.storedBytes = 0;
    for (const [name, file] of oldestFirst) this.remember(name, file);
    this.trim();
    await Promise.all(this.deleting);
  }

  /**
   * Forgets, oldest first, files past maxAgeMs and those beyond maxFiles or maxBytes, and
   * starts deleting them (tracked in `deleting`). The file being written is the newest and
   * fits within every limit, so it is never among them. Never throws.
   */
  private trim(): void {
    const now = Date.now();
    const doomed: string[] = [];
    for (const [name, file] of this.files) {
      const over = this.files.size > this.maxFiles || this.storedBytes > this.maxBytes;
      if (!over && now - file.modifiedAt <= this.maxAgeMs) break;
      if (name === this.writing) break;
      this.forget(name);
      doomed.push(name);
    }
    for (const name of doomed) {
      const deletion = unlink(path.join(this.outputDir, name)).catch((error: unknown) => {
        if (errorCode(error) !== 'ENOENT') {
          this.logger.warn('could not delete an old visualization', {
            fileName: name,
            error: String(error),
          });
        }
      });
      this.deleting.add(deletion);
      void deletion.finally(() => this.deleting.delete(deletion));
    }
  }
}
