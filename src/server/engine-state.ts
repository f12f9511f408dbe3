/**
 * The model lifecycle as the HTTP layer sees it: the engine's Models (src/engine/models.ts)
 * mapped to what clients are told: the public model summary, 503 answers while the image model
 * or video sessions cannot serve, and the overall health. The server listens before the model
 * is loaded, so /health can answer "loading" while the bundle loads.
 */
import type { AdmissionStats } from '../engine/admission';
import type { BundleManifest } from '../engine/bundle-manifest';
import type { ComponentStatus, DeviceState, Models } from '../engine/models';
import type { Segmenter } from '../engine/segmenter';
import type { VideoSessions } from '../engine/video/sessions';
import { ApiError, RETRY_AFTER_SECONDS } from './errors';

export type EngineStatus = ComponentStatus;
export type HealthStatus = 'ok' | 'loading' | 'degraded';

/** The public description of the bundle (never a path). */
export interface ModelSummary {
  id: string;
  checksum: string;
  random_weights: boolean;
  bundle_format_version: number;
  resolution: number;
  dtype: string;
}

export { RANDOM_WEIGHTS_WARNING } from '../engine/models';

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

const RETRY = { 'Retry-After': String(RETRY_AFTER_SECONDS) };

export class EngineState {
  constructor(readonly models: Models) {}

  /** The image model's state (what the image routes depend on). */
  get status(): EngineStatus {
    return this.models.imageStatus;
  }

  get videoStatus(): EngineStatus {
    return this.models.videoStatus;
  }

  /** The device the image model runs on ("cpu" or "cuda:N"). */
  get device(): string {
    return this.models.imageDevice;
  }

  /** Known once the manifest has been read (also while the engines still load). */
  get model(): ModelSummary | null {
    const manifest = this.models.manifest;
    return manifest === null ? null : summarizeManifest(manifest);
  }

  get segmenter(): Segmenter | null {
    return this.models.segmenter;
  }

  /**
   * Runs one image model request (decode to answer) under admission control: 429
   * `overloaded` when the queue is full, dropped when `signal` aborts while it waits.
   */
  admitImageRequest<T>(signal: AbortSignal, work: () => Promise<T>): Promise<T> {
    return this.models.imageAdmission.run(signal, work);
  }

  /** 429 `overloaded` now when an image request could neither run nor wait (before its body). */
  refuseImageRequestIfFull(): void {
    this.models.imageAdmission.refuseIfFull();
  }

  /** The image model's admission figures (metrics). */
  admission(): AdmissionStats {
    return this.models.imageAdmission.stats();
  }

  /** The caching allocator's figures of each accelerator device in use (metrics). */
  deviceMemory(): { device: string; allocatedBytes: number; reservedBytes: number }[] {
    return this.models.deviceMemory();
  }

  /** Bytes the model holds on its devices, once the addon is loaded (metrics). */
  nativeMemory(): { embeddings: number; trackers: number } | null {
    return this.models.nativeMemory();
  }

  devices(): DeviceState[] {
    return this.models.devices();
  }

  sessionCount(): number {
    return this.models.sessionCount();
  }

  /**
   * ok when every enabled part serves (video `unavailable` for a bundle without tracker modules
   * is not a fault), loading while a part loads, degraded when one failed or on shutdown.
   */
  health(): HealthStatus {
    const parts = [this.models.imageStatus, this.models.videoStatus];
    if (parts.includes('stopping') || parts.includes('failed')) return 'degraded';
    if (parts.includes('loading')) return 'loading';
    return 'ok';
  }

  markStopping(): void {
    this.models.markStopping();
  }

  /** The segmenter, or 503 not_ready (with Retry-After where waiting can help). */
  requireSegmenter(): Segmenter {
    const segmenter = this.models.segmenter;
    switch (this.models.imageStatus) {
      case 'ready':
        if (segmenter !== null) return segmenter;
        break;
      case 'loading':
        throw new ApiError('not_ready', 'the model is still loading; retry shortly', RETRY);
      case 'disabled':
        throw new ApiError('not_ready', 'the image model is disabled on this server');
      case 'stopping':
        // Requests admitted before the shutdown finish on the engine (new ones are refused
        // at the door, see app.ts); it is closed only after the HTTP server has drained.
        if (segmenter !== null) return segmenter;
        throw new ApiError('not_ready', 'the server is shutting down', { Connection: 'close' });
      case 'failed':
      case 'unavailable':
        break;
    }
    throw new ApiError('not_ready', 'the model failed to load; see the server logs');
  }

  /** The video sessions, or 503 video_disabled / not_ready saying why. */
  requireVideo(): VideoSessions {
    const sessions = this.models.videoSessions;
    switch (this.models.videoStatus) {
      case 'ready':
      case 'stopping':
        if (sessions !== null) return sessions;
        throw new ApiError('not_ready', 'the server is shutting down', { Connection: 'close' });
      case 'disabled':
        throw new ApiError(
          'video_disabled',
          'video sessions are disabled on this server (VIDEO_MODEL_ENABLED=false)',
        );
      case 'loading':
        throw new ApiError('not_ready', 'the video model is still loading; retry shortly', RETRY);
      case 'unavailable':
      case 'failed':
        break;
    }
    throw new ApiError(
      'not_ready',
      `video sessions are not available: ${this.models.videoReason ?? 'the video model failed to load'}`,
    );
  }

  /** Closes sessions, the segmenter and the engines (after a shutdown drained the requests). */
  async close(): Promise<void> {
    await this.models.close();
  }
}
