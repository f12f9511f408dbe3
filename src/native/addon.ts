/**
 * The one place that loads the native addon (build/Release/sam3.node). Everything else
 * imports loadAddon() from here and the types from ./types.
 *
 * The returned surface is the addon's own, wrapped so that every failure is a NativeError
 * (./errors) with the caller's stack. Embeddings pass through untouched: they are native
 * objects that own device memory until released (release()) or garbage-collected.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';

import { callNative, toNativeError } from './errors';
import type {
  ConceptInstances,
  ConceptQuery,
  DetectOptions,
  EngineOptions,
  ImageMapName,
  NativeAddon,
  NativeCancelToken,
  NativeEngine,
  NativeImageEmbedding,
  NativeTextEmbedding,
  NativeTracker,
  PointInstance,
  PointQuery,
  StageTimes,
  TrackerFrame,
  TrackerOptions,
  TrackerPrompt,
  StepRequest,
  ConceptPrompt,
} from './types';

const BUILD_HINT =
  'Build it with `npm run build:native` (needs cmake, a C++17 compiler and LibTorch: ' +
  'LibTorch comes from LIBTORCH_DIR if set (an unpacked libtorch), else from the torch ' +
  'installed in .venv, see `npm run setup`).';

/** Raised when the addon is missing or the dynamic loader refuses it. */
export class AddonLoadError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AddonLoadError';
  }
}

/** The repository root: the nearest ancestor of this file (src/native or dist/src/native) with a package.json. */
function repositoryRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) return path.resolve(__dirname, '..', '..');
  }
}

/** Where `npm run build:native` puts the addon. */
export function addonPath(): string {
  return path.join(repositoryRoot(), 'build', 'Release', 'sam3.node');
}

/** Runs a synchronous addon call, converting what it throws into a NativeError. */
function callNativeSync<T>(call: () => T): T {
  try {
    return call();
  } catch (error) {
    throw toNativeError(error);
  }
}

class Tracker implements NativeTracker {
  constructor(private readonly native: NativeTracker) {}

  addPrompt(rgb: Buffer, prompt: TrackerPrompt): Promise<TrackerFrame> {
    return callNative(() => this.native.addPrompt(rgb, prompt));
  }

  step(rgb: Buffer, request: StepRequest): Promise<TrackerFrame[]> {
    return callNative(() => this.native.step(rgb, request));
  }

  addConcept(
    rgb: Buffer,
    prompt: ConceptPrompt,
  ): Promise<{ conceptIds: number[]; frame: TrackerFrame }> {
    return callNative(() => this.native.addConcept(rgb, prompt));
  }

  removeObject(objId: number): Promise<boolean> {
    return callNative(() => this.native.removeObject(objId));
  }

  removeConcept(conceptId: number): Promise<number[]> {
    return callNative(() => this.native.removeConcept(conceptId));
  }

  objectConcepts(): number[] {
    return this.native.objectConcepts();
  }

  reset(): Promise<number> {
    return callNative(() => this.native.reset());
  }

  objectIds(): number[] {
    return this.native.objectIds();
  }

  promptFrames(): number[] {
    return this.native.promptFrames();
  }

  byteSize(): number {
    return this.native.byteSize();
  }

  release(): void {
    this.native.release();
  }
}

class Engine implements NativeEngine {
  constructor(private readonly native: NativeEngine) {}

  get info(): NativeEngine['info'] {
    return this.native.info;
  }

  get device(): string {
    return this.native.device;
  }

  encodeImage(
    rgb: Buffer,
    width: number,
    height: number,
    cancel?: NativeCancelToken,
    maps?: readonly ImageMapName[],
  ): Promise<NativeImageEmbedding> {
    return callNative(() => this.native.encodeImage(rgb, width, height, cancel, maps));
  }

  deriveImage(
    image: NativeImageEmbedding,
    maps: readonly ImageMapName[],
    cancel?: NativeCancelToken,
  ): Promise<NativeImageEmbedding> {
    return callNative(() => this.native.deriveImage(image, maps, cancel));
  }

  encodeText(
    ids: Int32Array,
    mask: Int32Array,
    batch: number,
    cancel?: NativeCancelToken,
  ): Promise<NativeTextEmbedding[]> {
    return callNative(() => this.native.encodeText(ids, mask, batch, cancel));
  }

  detect(
    image: NativeImageEmbedding,
    queries: ConceptQuery[],
    options: DetectOptions,
    cancel?: NativeCancelToken,
  ): Promise<ConceptInstances[]> {
    return callNative(() => this.native.detect(image, queries, options, cancel));
  }

  segmentPoints(
    image: NativeImageEmbedding,
    queries: PointQuery[],
    cancel?: NativeCancelToken,
  ): Promise<PointInstance[]> {
    return callNative(() => this.native.segmentPoints(image, queries, cancel));
  }

  createCancelToken(): NativeCancelToken {
    return callNativeSync(() => this.native.createCancelToken());
  }

  createTracker(options: TrackerOptions): NativeTracker {
    const full = { officialPostprocess: true, maxObjects: 0, ...options };
    return new Tracker(callNativeSync(() => this.native.createTracker(full)));
  }

  tasksRun(): number {
    return this.native.tasksRun();
  }

  imageBatchCounts(): Record<string, number> {
    return this.native.imageBatchCounts();
  }

  injectDeviceOutOfMemory(count: number): void {
    this.native.injectDeviceOutOfMemory(count);
  }

  lastStageTimes(): StageTimes {
    return this.native.lastStageTimes();
  }

  close(): Promise<void> {
    return callNative(() => this.native.close());
  }
}

function wrap(native: NativeAddon): NativeAddon {
  return Object.freeze({
    Engine: Object.freeze({
      load: async (options: EngineOptions): Promise<NativeEngine> =>
        new Engine(await callNative(() => native.Engine.load(options))),
    }),
    encodeRle: (mask: Uint8Array, height: number, width: number): string =>
      callNativeSync(() => native.encodeRle(mask, height, width)),
    liveTrackerBytes: () => native.liveTrackerBytes(),
    shutdown: () => native.shutdown(),
    runtimeInfo: () => native.runtimeInfo(),
    deviceMemory: (device: string) => native.deviceMemory(device),
  });
}

let loaded: NativeAddon | undefined;

/**
 * Loads the addon once per process. Throws AddonLoadError saying what to do when it is not
 * built or cannot be loaded (the dynamic loader's message included).
 */
export function loadAddon(): NativeAddon {
  if (loaded !== undefined) return loaded;
  const file = addonPath();
  if (!existsSync(file)) {
    throw new AddonLoadError(
      `The native addon is not built: ${file} does not exist. ${BUILD_HINT}`,
    );
  }
  let native: NativeAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    native = require(file) as NativeAddon;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new AddonLoadError(
      `The native addon at ${file} failed to load: ${reason}\n` +
        `If LibTorch moved or changed since the build, rebuild. ${BUILD_HINT}`,
      { cause: error },
    );
  }
  loaded = wrap(native);
  // Let a running model call finish before exit handlers tear LibTorch down (process.exit()
  // included); queued calls are dropped.
  process.once('exit', () => native.shutdown());
  return loaded;
}
