/**
 * The image model's lifecycle as the HTTP layer sees it: loading -> ready | failed, then
 * stopping on shutdown (or disabled by IMAGE_MODEL_ENABLED=false). The server listens before
 * the model is loaded, so /health can answer "loading" while the bundle loads.
 */
import type { Config } from '../config';
import { readBundleManifest, type BundleManifest } from '../engine/bundle-manifest';
import { Segmenter } from '../engine/segmenter';
import type { Logger } from '../logging';
import type { NativeAddon } from '../native/types';
import { ApiError, RETRY_AFTER_SECONDS } from './errors';

export type EngineStatus = 'loading' | 'ready' | 'failed' | 'disabled' | 'stopping';

/** The public description of the bundle (never a path). */
export interface ModelSummary {
  id: string;
  checksum: string;
  random_weights: boolean;
  bundle_format_version: number;
  resolution: number;
  dtype: string;
}

export const RANDOM_WEIGHTS_WARNING =
  'This server runs a RANDOM-WEIGHT test bundle: its masks, boxes and scores are meaningless. ' +
  'Export the real SAM3 checkpoint with tools/export_sam3.py for real results.';

export function summarizeManifest(manifest: BundleManifest): ModelSummary {
  return {
    id: manifest.model.id,
    checksum: manifest.model.checksum,
    random_weights: manifest.model.random_weights,
    bundle_format_version: manifest.format_version,
    resolution: manifest.resolution,
    dtype: manifest.dtype,
  };
}

export class EngineState {
  private currentStatus: EngineStatus = 'loading';
  private currentSegmenter: Segmenter | null = null;
  private currentModel: ModelSummary | null = null;

  constructor(
    /** The device the image model runs on ("cpu" or "cuda:N"). */
    readonly device: string,
  ) {}

  get status(): EngineStatus {
    return this.currentStatus;
  }

  /** Known once the manifest has been read (also while the engine itself still loads). */
  get model(): ModelSummary | null {
    return this.currentModel;
  }

  get segmenter(): Segmenter | null {
    return this.currentSegmenter;
  }

  setModel(model: ModelSummary): void {
    this.currentModel = model;
  }

  markReady(segmenter: Segmenter): void {
    if (this.currentStatus === 'stopping') return;
    this.currentSegmenter = segmenter;
    this.currentStatus = 'ready';
  }

  markFailed(): void {
    if (this.currentStatus === 'stopping') return;
    this.currentStatus = 'failed';
  }

  markDisabled(): void {
    this.currentStatus = 'disabled';
  }

  /** New requests are refused from now on (app.ts); admitted ones still get the segmenter. */
  markStopping(): void {
    this.currentStatus = 'stopping';
  }

  /** The segmenter, or 503 not_ready (with Retry-After where waiting can help). */
  requireSegmenter(): Segmenter {
    switch (this.currentStatus) {
      case 'ready':
        if (this.currentSegmenter !== null) return this.currentSegmenter;
        break;
      case 'loading':
        throw new ApiError('not_ready', 'the model is still loading; retry shortly', {
          'Retry-After': String(RETRY_AFTER_SECONDS),
        });
      case 'disabled':
        throw new ApiError('not_ready', 'the image model is disabled on this server');
      case 'stopping':
        // Requests admitted before the shutdown finish on the engine (new ones are refused
        // at the door, see app.ts); it is closed only after the HTTP server has drained.
        if (this.currentSegmenter !== null) return this.currentSegmenter;
        throw new ApiError('not_ready', 'the server is shutting down', { Connection: 'close' });
      case 'failed':
        break;
    }
    throw new ApiError('not_ready', 'the model failed to load; see the server logs');
  }

  /** Closes the segmenter (after a shutdown drained the requests). */
  async close(): Promise<void> {
    const segmenter = this.currentSegmenter;
    this.currentSegmenter = null;
    if (segmenter !== null) await segmenter.close();
  }
}

/**
 * Loads the image model named by the configuration into `state`: manifest first (so / and
 * /health show the model, and a random-weight bundle is announced, while the engine loads),
 * then the tokenizer and the native engine. Never throws: failures mark the state failed and
 * are logged with their reason.
 */
export async function loadImageModel(
  state: EngineState,
  config: Readonly<Config>,
  loadAddon: () => NativeAddon,
  logger: Logger,
  bundleDir: string,
): Promise<void> {
  const started = Date.now();
  try {
    const manifest = await readBundleManifest(bundleDir);
    state.setModel(summarizeManifest(manifest));
    if (manifest.model.random_weights) {
      logger.warn(RANDOM_WEIGHTS_WARNING, { modelId: manifest.model.id });
    }
    const segmenter = await Segmenter.load(loadAddon(), manifest, {
      bundleDir,
      device: state.device,
      bpePath: config.sam3BpePath,
      expectedResolution: config.imageModelResolution,
      cache: {
        enabled: config.enableFeatureCache,
        maxBytes: config.maxCacheSizeMb * 1024 * 1024,
        ttlMs: config.featureCacheTtlSeconds * 1000,
      },
    });
    if (state.status === 'stopping') {
      await segmenter.close();
      return;
    }
    state.markReady(segmenter);
    logger.info(`image model ${manifest.model.id} ready on ${state.device}`, {
      modelId: manifest.model.id,
      device: state.device,
      loadMs: Date.now() - started,
    });
  } catch (error) {
    state.markFailed();
    logger.error(`image model failed to load: ${(error as Error).message}`, {
      error: error instanceof Error ? { name: error.name, stack: error.stack } : String(error),
    });
  }
}
