/**
 * The model lifecycle: one bundle, loaded once per device, serving the image segmenter and the
 * video sessions.
 *
 * - DevicePool: one native engine per device ("cpu", "cuda:N"), shared by every user on that
 *   device (the image segmenter and the video sessions placed there), so a device holds the
 *   model's weights once and its executor thread orders image and video work together. Users
 *   get a borrowed view of the engine; the engine closes when the last view is closed.
 * - Models: loading -> ready | failed for the image model and for video, each also `disabled`
 *   by configuration; video is `unavailable` (not a fault) when the bundle has no tracker
 *   modules (the engine's info.videoAvailable). load() never throws: failures are logged and
 *   kept as a reason.
 *
 * Server code reads states and reasons from here and maps them to HTTP answers; nothing here
 * knows about HTTP.
 */
import type { Config } from '../config';
import type { Logger } from '../logging';
import type { EngineOptions, ImageBatchOptions, NativeAddon, NativeEngine } from '../native/types';
import { Admission } from './admission';
import { nativeLimitMismatches } from './input-limits';
import { bundleVocabPath, readBundleManifest, type BundleManifest } from './bundle-manifest';
import { ClipTokenizer } from './tokenizer';
import { batchingMismatch, compileMismatch, ModelLoadError, Segmenter } from './segmenter';
import { VideoSessions } from './video/sessions';

export type ComponentStatus =
  | 'loading'
  | 'ready'
  | 'failed'
  | 'disabled'
  /** Video only: the bundle has no tracker modules (a format-1 bundle still serves images). */
  | 'unavailable'
  | 'stopping';

/** Said (logged, and in / and /health) whenever the bundle has random weights. */
export const RANDOM_WEIGHTS_WARNING =
  'This server runs a RANDOM-WEIGHT test bundle: its masks, boxes and scores are meaningless. ' +
  'Export the real SAM3 checkpoint with tools/export_sam3.py for real results.';

/** How the pool loads each device's engine. */
export interface DeviceEngineOptions {
  /** The batching of the engine on the image model's device, if any. */
  imageBatch?: { device: string; batch: ImageBatchOptions } | null;
  /** The devices whose engine runs the bundle's compiled vision trunk. */
  compiled?: ReadonlySet<string>;
}

interface PoolEntry {
  engine: Promise<NativeEngine>;
  users: number;
}

/**
 * One native engine per device, loaded on first use. acquire() returns a view of the shared
 * engine whose close() gives this user's share back (idempotent); the engine itself closes
 * after its last user, once its queued work is done.
 */
export class DevicePool {
  private readonly entries = new Map<string, PoolEntry>();

  constructor(
    private readonly addon: NativeAddon,
    private readonly bundleDir: string,
    private readonly engines: DeviceEngineOptions = {},
  ) {}

  async acquire(device: string): Promise<NativeEngine> {
    let entry = this.entries.get(device);
    if (entry === undefined) {
      const options: EngineOptions = { bundleDir: this.bundleDir, device };
      const { imageBatch, compiled } = this.engines;
      if (imageBatch?.device === device) options.imageBatch = imageBatch.batch;
      if (compiled?.has(device) === true) options.compiled = true;
      const loading = this.addon.Engine.load(options);
      entry = { engine: loading, users: 0 };
      this.entries.set(device, entry);
      // A failed load leaves the pool, so nothing later waits on it.
      loading.catch(() => {
        if (this.entries.get(device) === entry) this.entries.delete(device);
      });
    }
    entry.users += 1;
    let engine: NativeEngine;
    try {
      engine = await entry.engine;
    } catch (error) {
      entry.users -= 1;
      throw error;
    }
    return this.borrow(device, entry, engine);
  }

  /** Closes every engine now (shutdown), whoever still holds a view. */
  async closeAll(): Promise<void> {
    const entries = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(
      entries.map(async (entry) => {
        const engine = await entry.engine.catch(() => null);
        await engine?.close();
      }),
    );
  }

  private borrow(device: string, entry: PoolEntry, engine: NativeEngine): NativeEngine {
    let returned = false;
    const giveBack = async (): Promise<void> => {
      if (returned) return;
      returned = true;
      entry.users -= 1;
      if (entry.users > 0 || this.entries.get(device) !== entry) return;
      this.entries.delete(device);
      await engine.close();
    };
    // Every member but close() is the shared engine's own (methods bound to it), so the view
    // follows the native surface as it grows.
    return new Proxy(engine, {
      get(target, property) {
        if (property === 'close') return giveBack;
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  }
}

export interface ModelsOptions {
  config: Readonly<Config>;
  logger: Logger;
  /** The native addon (throws when it is not built). */
  loadAddon: () => NativeAddon;
}

export interface DeviceState {
  device: string;
  role: 'image' | 'video';
  status: ComponentStatus;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function errorDetails(error: unknown): unknown {
  return error instanceof Error ? { name: error.name, stack: error.stack } : String(error);
}

export class Models {
  private imageState: ComponentStatus = 'loading';
  private videoState: ComponentStatus = 'loading';
  private videoWhy: string | null = null;
  private currentManifest: BundleManifest | null = null;
  private currentSegmenter: Segmenter | null = null;
  private currentSessions: VideoSessions | null = null;
  private pool: DevicePool | null = null;
  private addon: NativeAddon | null = null;
  /** Admission of image model requests (one device: the image model's). */
  readonly imageAdmission: Admission;

  constructor(private readonly options: ModelsOptions) {
    const { config } = options;
    if (!config.imageModelEnabled) this.imageState = 'disabled';
    if (!config.videoModelEnabled) this.videoState = 'disabled';
    this.imageAdmission = new Admission({
      maxRunning: config.maxConcurrentRequests,
      maxQueued: config.maxQueuedRequests,
      name: `the image model on ${config.imageModelDevice}`,
    });
  }

  get imageStatus(): ComponentStatus {
    return this.imageState;
  }

  get videoStatus(): ComponentStatus {
    return this.videoState;
  }

  /** Why video is not ready (unavailable, failed, disabled), for the 503 message; else null. */
  get videoReason(): string | null {
    return this.videoWhy;
  }

  /** The image model's device ("cpu" or "cuda:N"). */
  get imageDevice(): string {
    return this.options.config.imageModelDevice;
  }

  /** Known once the manifest has been read (also while the engines still load). */
  /** The caching allocator's figures of each accelerator device in use (none on CPU). */
  deviceMemory(): { device: string; allocatedBytes: number; reservedBytes: number }[] {
    const addon = this.addon;
    if (addon === null) return [];
    const devices = [...new Set(this.devices().map((d) => d.device))];
    return devices.flatMap((device) => {
      const memory = addon.deviceMemory(device);
      return memory === null ? [] : [{ device, ...memory }];
    });
  }

  /** Bytes held by the process's embeddings and video trackers; null before the addon loads. */
  nativeMemory(): { embeddings: number; trackers: number } | null {
    const addon = this.addon;
    if (addon === null) return null;
    return {
      embeddings: addon.runtimeInfo().liveEmbeddingBytes,
      trackers: addon.liveTrackerBytes(),
    };
  }

  get manifest(): BundleManifest | null {
    return this.currentManifest;
  }

  get segmenter(): Segmenter | null {
    return this.currentSegmenter;
  }

  get videoSessions(): VideoSessions | null {
    return this.currentSessions;
  }

  /** Open video sessions (for /health). */
  sessionCount(): number {
    return this.currentSessions?.count ?? 0;
  }

  /** Bytes held by all video trackers of the process not yet released (leak checks). */
  liveTrackerBytes(): number {
    return this.addon?.liveTrackerBytes() ?? 0;
  }

  /** Image first, then one entry per video device. */
  devices(): DeviceState[] {
    const { config } = this.options;
    return [
      { device: config.imageModelDevice, role: 'image', status: this.imageState },
      ...config.videoDevices.map((device) => ({
        device,
        role: 'video' as const,
        status: this.videoState,
      })),
    ];
  }

  /**
   * Reads the manifest of `bundleDir` (so / and /health show the model while engines load),
   * then loads the image segmenter and the video devices, sharing one engine per device.
   */
  async load(bundleDir: string): Promise<void> {
    const { logger } = this.options;
    if (this.imageState !== 'loading' && this.videoState !== 'loading') return;
    let manifest: BundleManifest;
    try {
      manifest = await readBundleManifest(bundleDir);
      this.currentManifest = manifest;
      if (manifest.model.random_weights) {
        logger.warn(RANDOM_WEIGHTS_WARNING, { modelId: manifest.model.id });
      }
      const addon = this.options.loadAddon();
      const mismatches = nativeLimitMismatches(addon.runtimeInfo().limits);
      if (mismatches.length > 0) {
        throw new ModelLoadError(
          `the native addon's input limits differ from the server's (${mismatches.join(', ')}): ` +
            'it was built from other sources; rebuild it (npm run build:native)',
        );
      }
      const { config } = this.options;
      const refused =
        (config.imageModelEnabled
          ? batchingMismatch(config.imageModelBatchSize, manifest)
          : null) ?? compileMismatch(config, manifest);
      if (refused !== null) throw new ModelLoadError(refused);
      this.addon = addon;
      this.pool = new DevicePool(this.addon, bundleDir, {
        imageBatch: this.imageBatching(),
        compiled: this.compiledDevices(),
      });
    } catch (error) {
      logger.error(`model bundle failed to load: ${errorMessage(error)}`, {
        error: errorDetails(error),
      });
      this.failImage();
      this.failVideo('the model failed to load; see the server logs');
      return;
    }
    await Promise.all([this.loadImage(manifest, bundleDir), this.loadVideo(manifest, bundleDir)]);
    if (this.isStopping()) await this.close();
  }

  /** New work is refused from now on; what was admitted still finishes. */
  markStopping(): void {
    this.imageState = 'stopping';
    this.videoState = 'stopping';
    this.currentSessions?.stopAccepting();
  }

  /** Closes every session, the segmenter and the engines (after a shutdown drained). */
  async close(): Promise<void> {
    const sessions = this.currentSessions;
    const segmenter = this.currentSegmenter;
    this.currentSessions = null;
    this.currentSegmenter = null;
    if (sessions !== null) await sessions.closeAll();
    if (segmenter !== null) await segmenter.close();
    await this.pool?.closeAll();
  }

  /** The devices whose engine runs the compiled vision trunk. */
  private compiledDevices(): Set<string> {
    const { config } = this.options;
    const devices = new Set<string>();
    if (config.imageModelEnabled && config.imageModelCompile) devices.add(config.imageModelDevice);
    if (config.videoModelEnabled && config.videoModelCompile) {
      for (const device of config.videoDevices) devices.add(device);
    }
    return devices;
  }

  /** IMAGE_MODEL_BATCH_SIZE / _WAIT_MS for the image device's engine; null when off. */
  private imageBatching(): { device: string; batch: ImageBatchOptions } | null {
    const { config } = this.options;
    if (!config.imageModelEnabled || config.imageModelBatchSize <= 1) return null;
    return {
      device: config.imageModelDevice,
      batch: { maxSize: config.imageModelBatchSize, waitMs: config.imageModelBatchWaitMs },
    };
  }

  private isStopping(): boolean {
    return this.imageState === 'stopping' || this.videoState === 'stopping';
  }

  private failImage(): void {
    if (this.imageState === 'loading') this.imageState = 'failed';
  }

  private failVideo(reason: string): void {
    if (this.videoState !== 'loading') return;
    this.videoState = 'failed';
    this.videoWhy = reason;
  }

  private async loadImage(manifest: BundleManifest, bundleDir: string): Promise<void> {
    if (this.imageState !== 'loading') return;
    const { config, logger } = this.options;
    const pool = this.pool as DevicePool;
    const started = Date.now();
    try {
      // The segmenter loads its engine through the pool, so it shares the device's engine.
      const pooled: NativeAddon = {
        ...(this.addon as NativeAddon),
        Engine: { load: (engineOptions) => pool.acquire(engineOptions.device) },
      };
      const segmenter = await Segmenter.load(pooled, manifest, {
        bundleDir,
        device: config.imageModelDevice,
        bpePath: config.sam3BpePath,
        expectedResolution: config.imageModelResolution,
        cache: {
          enabled: config.enableFeatureCache,
          maxBytes: config.maxCacheSizeMb * 1024 * 1024,
          ttlMs: config.featureCacheTtlSeconds * 1000,
        },
      });
      if (this.imageState !== 'loading') {
        await segmenter.close();
        return;
      }
      this.currentSegmenter = segmenter;
      this.imageState = 'ready';
      logger.info(`image model ${manifest.model.id} ready on ${config.imageModelDevice}`, {
        modelId: manifest.model.id,
        device: config.imageModelDevice,
        loadMs: Date.now() - started,
      });
    } catch (error) {
      this.failImage();
      logger.error(`image model failed to load: ${errorMessage(error)}`, {
        error: errorDetails(error),
      });
    }
  }

  private async loadVideo(manifest: BundleManifest, bundleDir: string): Promise<void> {
    if (this.videoState !== 'loading') return;
    const { config, logger } = this.options;
    const pool = this.pool as DevicePool;
    const started = Date.now();
    const engines = new Map<string, NativeEngine>();
    try {
      for (const device of config.videoDevices) engines.set(device, await pool.acquire(device));
      const first = engines.values().next().value as NativeEngine;
      if (!first.info.videoAvailable) {
        for (const engine of engines.values()) await engine.close();
        if (this.videoState !== 'loading') return;
        this.videoState = 'unavailable';
        this.videoWhy =
          `the model bundle has no video tracker modules (bundle format version ` +
          `${first.info.formatVersion}); export one with tracker modules ` +
          '(tools/export_sam3.py) to serve video';
        logger.warn(`video sessions unavailable: ${this.videoWhy}`);
        return;
      }
      const concepts =
        first.info.conceptAvailable && manifest.concept !== undefined
          ? {
              tokenizer: await ClipTokenizer.fromFile(
                bundleVocabPath(bundleDir, manifest),
                manifest.text.context_length,
              ),
              hotstartDelay: manifest.concept.hotstart_delay,
              officialPostprocess: config.videoOfficialPostprocess,
            }
          : null;
      if (concepts === null) {
        logger.warn(
          'text prompts in video are unavailable: the model bundle has no concept-tracking ' +
            'modules (bundle format 3); clicked objects are tracked',
        );
      }
      const sessions = new VideoSessions({
        engines,
        logger,
        maxSessions: config.maxConcurrentSessions,
        sessionTimeoutMs: config.sessionTimeoutSeconds * 1000,
        uploadDir: config.uploadDir,
        pathRoots: config.videoPathRoots,
        limits: {
          maxFrames: config.videoMaxFrames,
          maxPixels: config.videoMaxPixels,
          maxDurationSeconds: config.videoMaxDurationSeconds,
          maxBytes: config.maxUploadSizeMb * 1024 * 1024,
        },
        download: {
          timeoutMs: config.videoUrlTimeoutSeconds * 1000,
          maxRedirects: config.videoUrlMaxRedirects,
          allowedAddresses: config.videoUrlAllowedAddresses,
        },
        frameWindow: config.videoFrameWindow,
        memoryFrames: config.videoMemoryFrames,
        maxObjects: config.videoMaxObjects,
        concepts,
        ffmpegPath: config.ffmpegPath,
        ffprobePath: config.ffprobePath,
      });
      sessions.init();
      if (this.videoState !== 'loading') {
        await sessions.closeAll();
        return;
      }
      this.currentSessions = sessions;
      this.videoState = 'ready';
      logger.info(`video sessions ready on ${config.videoDevices.join(', ')}`, {
        devices: config.videoDevices,
        loadMs: Date.now() - started,
      });
    } catch (error) {
      for (const engine of engines.values()) await engine.close();
      this.failVideo('the video model failed to load; see the server logs');
      logger.error(`video model failed to load: ${errorMessage(error)}`, {
        error: errorDetails(error),
      });
    }
  }
}
