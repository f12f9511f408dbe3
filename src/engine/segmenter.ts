/**
 * Segmenter: the image-segmentation facade the server talks to. It plans the queries of a
 * request (prompt-plan.ts), takes image and text features from the FeatureCache (computing
 * what is missing, once, however many requests ask at the same time), and runs every concept
 * query of the request through the detector as one batch and the interactive query through
 * the SAM heads.
 *
 * Cache keys: image features by the SHA-256 of the decoded RGB pixels plus their size, the
 * bundle checksum, its resolution and the device; text features by the text plus the same
 * model identity. One byte budget (MAX_CACHE_SIZE_MB) covers both.
 *
 * A bundle whose vision encoder is split into trunk and necks (format 4) caches an image's
 * maps under three keys: the trunk output, the detector's maps (concept queries) and the
 * tracker's (clicks). A request computes only the maps its queries need, each from the cached
 * trunk output when there is one: a text request never runs the tracker's neck, and a later
 * click on the same image runs only that neck. An older bundle caches one entry of all maps.
 */
import { webcrypto } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Config } from '../config';
import { NativeError } from '../native/errors';
import type {
  ConceptInstances,
  ImageMapName,
  NativeAddon,
  NativeCancelToken,
  NativeEngine,
  NativeImageEmbedding,
  NativeTextEmbedding,
} from '../native/types';
import { RequestCancelledError, throwIfCancelled } from './admission';
import { bundleVocabPath, type BundleManifest } from './bundle-manifest';
import { FeatureCache, type CacheStats, type Lease } from './feature-cache';
import type { DecodedImage } from './image-decoder';
import type { ConceptPlan, PointPlan, QueryPlan } from './prompt-plan';
import { ClipTokenizer } from './tokenizer';

/** What the segmenter needs from a tokenizer (ClipTokenizer satisfies it). */
export interface PromptTokenizer {
  readonly contextLength: number;
  /** Row-major [texts.length, contextLength] ids and attention mask (1 token, 0 padding). */
  encodeBatch(texts: readonly string[]): { ids: Int32Array; mask: Int32Array };
}

/** COCO RLE as pycocotools writes it: size is [height, width], counts column-major. */
export interface RleMask {
  size: [number, number];
  counts: string;
}

/** Instances of one or more queries, in query order. */
export interface Instances {
  masks: RleMask[];
  /** Normalized [cx, cy, w, h] per instance. */
  boxes: number[][];
  /** Probabilities, one per instance. */
  scores: number[];
  /** The prompt each instance answers: its text, "box" or "point". */
  labels: string[];
}

/** Wall times of one request's stages, milliseconds (for Server-Timing and benchmarks). */
export type Timings = Record<string, number>;

export interface SegmentRequest {
  image: DecodedImage;
  /** Aborted: the client went away; the next stage is not run (RequestCancelledError). */
  signal?: AbortSignal;
  /** planQueries() of the request's prompts (validated upstream: at least one). */
  queries: readonly QueryPlan[];
  /** Keep concept instances whose score (a probability) is above this. */
  confidenceThreshold: number;
}

export interface SegmentResult extends Instances {
  num_masks: number;
  image_size: { width: number; height: number };
  /** Wall time of the model work (features, detector, decoders), milliseconds. */
  inference_time_ms: number;
  /** Whether the image features came from the cache. */
  cacheHit: boolean;
  timings: Timings;
}

export interface TextsRequest {
  image: DecodedImage;
  /** Aborted: the client went away; the next stage is not run (RequestCancelledError). */
  signal?: AbortSignal;
  texts: readonly string[];
  confidenceThreshold: number;
}

export interface TextsResult {
  results: (Omit<Instances, 'labels'> & { prompt: string; num_masks: number })[];
  cacheHit: boolean;
  inference_time_ms: number;
  timings: Timings;
}

export interface FeatureCacheConfig {
  enabled: boolean;
  maxBytes: number;
  ttlMs: number;
}

export interface LoadSegmenterOptions {
  bundleDir: string;
  device: string;
  /** CLIP vocabulary; null uses the bundle's own. */
  bpePath: string | null;
  /** IMAGE_MODEL_RESOLUTION: when set (not null), must equal the bundle's resolution. */
  expectedResolution: number | null;
  cache: FeatureCacheConfig;
}

export interface SegmenterStats {
  /** Vision encoder (or trunk) runs: each image whose features were not cached. */
  imageEncodes: number;
  /** Text encoder rows computed (each cache miss on a text). */
  textEncodes: number;
  /** Tasks the engine's executor has run (every model call is one; each image of a batch). */
  tasksRun: number;
  /** Vision encoder calls by images per call (IMAGE_MODEL_BATCH_SIZE), e.g. {"1": 9, "4": 2}. */
  imageBatches: Record<string, number>;
  cache: CacheStats;
}

/** Why IMAGE_MODEL_RESOLUTION (when set) refuses the bundle's resolution, or null. */
export function resolutionMismatch(expected: number | null, actual: number): string | null {
  if (expected === null || expected === actual) return null;
  return `IMAGE_MODEL_RESOLUTION is ${expected} but the bundle's resolution is ${actual}`;
}

/** Model loading failed for a reason a person can act on (message names the cause). */
export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
}

type Feature = NativeImageEmbedding | NativeTextEmbedding;

/**
 * Bytes the cache reserves for one image's and one text's features while they are computed:
 * `image` all six maps (one entry, bundles before format 4), `trunk`, `detector` and
 * `tracker` the three entries of a format-4 bundle.
 */
export interface FeatureSizes {
  image: number;
  trunk: number;
  detector: number;
  tracker: number;
  text: number;
}

/** The maps a query needs: the detector's for concepts (text, boxes), the tracker's for clicks. */
type NeckName = 'detector' | 'tracker';

/** The image features of one request: a lease per neck it needs, one cache hit flag. */
interface ImageLeases {
  maps: Partial<Record<NeckName, NativeImageEmbedding>>;
  /** Every map came from the cache (or a computation in flight): no vision work of its own. */
  hit: boolean;
  release(): void;
}

const DTYPE_BYTES: Readonly<Record<string, number>> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  int64: 8,
};

interface TensorSignature {
  name?: unknown;
  shape?: unknown;
  dtype?: unknown;
}

/** A module's tensor signatures as the manifest lists them (validated by native/core). */
function moduleSignature(
  manifest: BundleManifest,
  module: string,
): { inputs?: TensorSignature[]; outputs?: TensorSignature[]; compiled?: unknown } {
  const modules = (manifest as { modules?: Record<string, object> }).modules;
  return modules?.[module] ?? {};
}

/** Elements x element size of a signature whose shape is all numbers after `skip` dims. */
function signatureBytes(tensor: TensorSignature | undefined, skip = 0): number {
  const element = DTYPE_BYTES[String(tensor?.dtype)];
  const shape = Array.isArray(tensor?.shape) ? (tensor.shape as unknown[]).slice(skip) : null;
  if (element === undefined || shape === null || !shape.every(Number.isSafeInteger)) return 0;
  return (shape as number[]).reduce((product, side) => product * side, element);
}

/** Bytes of one batch row of each of a module's outputs; 0 unless every one is known. */
function outputRowBytes(manifest: BundleManifest, module: string): number {
  const outputs = moduleSignature(manifest, module).outputs ?? [];
  const rows = outputs.map((output) => signatureBytes(output, 1));
  return rows.length > 0 && rows.every((bytes) => bytes > 0) ? rows.reduce((a, b) => a + b) : 0;
}

/**
 * The feature sizes from the bundle's module signatures (docs/bundle-format.md): an image
 * entry holds one batch row of each output of its module(s); a text embedding one row of
 * text_features plus its attention mask (int64 in native/core). 0 where the manifest does not
 * say; the segmenter then learns the size from the first computed value.
 */
export function expectedFeatureSizes(manifest: BundleManifest): FeatureSizes {
  const features = moduleSignature(manifest, 'text_encoder').outputs?.find(
    (o) => o.name === 'text_features',
  );
  const row = signatureBytes(features, 1);
  const text = row > 0 ? row + manifest.text.context_length * DTYPE_BYTES.int64 : 0;
  const trunk = outputRowBytes(manifest, 'vision_trunk');
  const detector = outputRowBytes(manifest, 'detector_neck');
  const tracker = outputRowBytes(manifest, 'tracker_neck');
  const whole = outputRowBytes(manifest, 'vision_encoder');
  const image = whole > 0 ? whole : detector > 0 && tracker > 0 ? detector + tracker : 0;
  return { image, trunk, detector, tracker, text };
}

/**
 * Why IMAGE_MODEL_BATCH_SIZE refuses the bundle, or null: batching needs a vision encoder whose
 * pixel_values take any batch size (exporter version 5 declares it "B").
 */
export function batchingMismatch(batchSize: number, manifest: BundleManifest): string | null {
  if (batchSize <= 1) return null;
  const encoder = manifest.format_version >= 4 ? 'vision_trunk' : 'vision_encoder';
  const pixels = moduleSignature(manifest, encoder).inputs?.find(
    (input) => input.name === 'pixel_values',
  );
  const batch = Array.isArray(pixels?.shape) ? (pixels.shape as unknown[])[0] : undefined;
  if (typeof batch === 'string') return null;
  return (
    `IMAGE_MODEL_BATCH_SIZE is ${batchSize} but the bundle's vision encoder takes one image ` +
    'per call (exported before exporter version 5): export it again with ' +
    'tools/export_sam3.py, or set IMAGE_MODEL_BATCH_SIZE=1'
  );
}

/**
 * Why the bundle cannot honour IMAGE_MODEL_COMPILE / VIDEO_MODEL_COMPILE (true for an enabled
 * model), or null: they need its compiled vision trunk.
 */
export function compileMismatch(
  config: Pick<
    Config,
    'imageModelEnabled' | 'imageModelCompile' | 'videoModelEnabled' | 'videoModelCompile'
  >,
  manifest: BundleManifest,
): string | null {
  const variables: string[] = [];
  if (config.imageModelEnabled && config.imageModelCompile) variables.push('IMAGE_MODEL_COMPILE');
  if (config.videoModelEnabled && config.videoModelCompile) variables.push('VIDEO_MODEL_COMPILE');
  if (variables.length === 0) return null;
  if (typeof moduleSignature(manifest, 'vision_trunk').compiled === 'string') return null;
  const named = variables.join(' and ');
  return (
    `${named} ${variables.length > 1 ? 'are' : 'is'} true but the bundle has no compiled ` +
    'vision trunk: export it with tools/export_sam3.py --compile (on a machine like the ' +
    `serving one), or set ${named} to false`
  );
}

/** A model call of this request: dropped unrun (CANCELLED) once its client went away. */
async function cancellable<T>(call: Promise<T>, stage: string): Promise<T> {
  try {
    return await call;
  } catch (error) {
    if (error instanceof NativeError && error.code === 'CANCELLED') {
      throw new RequestCancelledError(`${stage} was dropped before it ran`);
    }
    throw error;
  }
}
/** Milliseconds since `started` (a performance.now() value), to 0.1 ms. */
export function elapsedMs(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

export class Segmenter {
  private readonly cache: FeatureCache<Feature>;
  private readonly modelKey: string;
  /** Reserved in the cache while features are computed; then the last real size. */
  private readonly featureSizes: FeatureSizes;
  private imageEncodes = 0;
  private textEncodes = 0;

  constructor(
    private readonly engine: NativeEngine,
    private readonly tokenizer: PromptTokenizer,
    cache: FeatureCacheConfig,
    featureSizes: FeatureSizes = { image: 0, trunk: 0, detector: 0, tracker: 0, text: 0 },
  ) {
    if (tokenizer.contextLength !== engine.info.contextLength) {
      throw new ModelLoadError(
        `tokenizer context length ${tokenizer.contextLength} differs from the bundle's ` +
          `${engine.info.contextLength}`,
      );
    }
    this.cache = new FeatureCache<Feature>({
      maxBytes: cache.enabled ? cache.maxBytes : 0,
      ttlMs: cache.ttlMs,
    });
    this.featureSizes = { ...featureSizes };
    const info = engine.info;
    this.modelKey = `${info.checksum}|${info.resolution}|${engine.device}`;
  }

  /**
   * Loads the tokenizer and the native engine of a bundle whose manifest has been read
   * (readBundleManifest). The resolution is checked first, so a configuration mistake fails
   * before the slow engine load.
   */
  static async load(
    addon: NativeAddon,
    manifest: BundleManifest,
    options: LoadSegmenterOptions,
  ): Promise<Segmenter> {
    const mismatch = resolutionMismatch(options.expectedResolution, manifest.resolution);
    if (mismatch !== null) throw new ModelLoadError(mismatch);
    const vocabPath = options.bpePath ?? bundleVocabPath(options.bundleDir, manifest);
    const tokenizer = await ClipTokenizer.fromFile(vocabPath, manifest.text.context_length);
    const engine = await addon.Engine.load({
      bundleDir: options.bundleDir,
      device: options.device,
    });
    try {
      return new Segmenter(engine, tokenizer, options.cache, expectedFeatureSizes(manifest));
    } catch (error) {
      await engine.close();
      throw error;
    }
  }

  stats(): SegmenterStats {
    return {
      imageEncodes: this.imageEncodes,
      textEncodes: this.textEncodes,
      tasksRun: this.engine.tasksRun(),
      imageBatches: this.engine.imageBatchCounts(),
      cache: this.cache.stats(),
    };
  }

  /** The next `count` model calls fail with DEVICE_OOM without running (fault tests). */
  injectDeviceOutOfMemory(count: number): void {
    this.engine.injectDeviceOutOfMemory(count);
  }

  /** Per-stage times of the engine's most recent calls (sequential benchmarks only). */
  engineStageTimes(): Record<string, number> {
    return this.engine.lastStageTimes();
  }

  async segment(request: SegmentRequest): Promise<SegmentResult> {
    const { image, confidenceThreshold, queries } = request;
    const concepts = queries.filter((q): q is ConceptPlan => q.kind === 'concept');
    const timings: Timings = {};
    const started = performance.now();
    const { signal } = request;
    const pointQuery = queries.find((q): q is PointPlan => q.kind === 'point');
    const needs: NeckName[] = [];
    if (concepts.length > 0) needs.push('detector');
    if (pointQuery !== undefined) needs.push('tracker');
    const imageLease = await this.imageFeatures(image, needs, timings, signal);
    const textLeases: Lease<Feature>[] = [];
    try {
      throwIfCancelled(signal, 'before the text features');
      textLeases.push(
        ...(await this.textFeatures(
          concepts.map((c) => c.text),
          timings,
          signal,
        )),
      );
      throwIfCancelled(signal, 'before detection');
      const conceptResults =
        concepts.length === 0
          ? []
          : await this.detect(
              imageLease.maps.detector as NativeImageEmbedding,
              concepts.map((concept, i) => ({ concept, text: textLeases[i].value })),
              confidenceThreshold,
              timings,
              signal,
            );
      if (pointQuery !== undefined) throwIfCancelled(signal, 'before the point query');
      const pointResult =
        pointQuery === undefined
          ? null
          : await this.segmentPoints(
              imageLease.maps.tracker as NativeImageEmbedding,
              pointQuery,
              timings,
              signal,
            );

      const result: SegmentResult = {
        masks: [],
        boxes: [],
        scores: [],
        labels: [],
        num_masks: 0,
        image_size: { width: image.width, height: image.height },
        inference_time_ms: elapsedMs(started),
        cacheHit: imageLease.hit,
        timings,
      };
      let conceptIndex = 0;
      for (const query of queries) {
        const instances =
          query.kind === 'point' ? (pointResult as Instances) : conceptResults[conceptIndex++];
        result.masks.push(...instances.masks);
        result.boxes.push(...instances.boxes);
        result.scores.push(...instances.scores);
        result.labels.push(...instances.labels);
      }
      result.num_masks = result.scores.length;
      return result;
    } finally {
      imageLease.release();
      for (const lease of textLeases) lease.release();
    }
  }

  /** One image, many text prompts: the /cached-features endpoint. */
  async segmentTexts(request: TextsRequest): Promise<TextsResult> {
    const { image, texts, confidenceThreshold } = request;
    const timings: Timings = {};
    const started = performance.now();
    const { signal } = request;
    const imageLease = await this.imageFeatures(image, ['detector'], timings, signal);
    const textLeases: Lease<Feature>[] = [];
    try {
      throwIfCancelled(signal, 'before the text features');
      textLeases.push(...(await this.textFeatures(texts, timings, signal)));
      throwIfCancelled(signal, 'before detection');
      const concepts = texts.map((text, i) => ({
        concept: { kind: 'concept', text, label: text, boxes: [], boxLabels: [] } as ConceptPlan,
        text: textLeases[i].value,
      }));
      const perText = await this.detect(
        imageLease.maps.detector as NativeImageEmbedding,
        concepts,
        confidenceThreshold,
        timings,
        signal,
      );
      return {
        results: perText.map((instances, i) => ({
          prompt: texts[i],
          masks: instances.masks,
          boxes: instances.boxes,
          scores: instances.scores,
          num_masks: instances.scores.length,
        })),
        cacheHit: imageLease.hit,
        inference_time_ms: elapsedMs(started),
        timings,
      };
    } finally {
      imageLease.release();
      for (const lease of textLeases) lease.release();
    }
  }

  /** Stops the engine after its queued work; later calls reject with ENGINE_CLOSED. */
  async close(): Promise<void> {
    this.cache.close();
    await this.engine.close();
  }

  /**
   * A native token cancelled when `signal` aborts: a model call still queued behind others on
   * the executor is then dropped (CANCELLED) instead of computed for nobody.
   */
  private cancelTokenFor(signal: AbortSignal | undefined): NativeCancelToken | undefined {
    if (signal === undefined) return undefined;
    const token = this.engine.createCancelToken();
    if (signal.aborted) token.cancel();
    else signal.addEventListener('abort', () => token.cancel(), { once: true });
    return token;
  }

  /**
   * The image's maps for `needs`, leased from the cache (computed when missing). A format-4
   * bundle computes each neck's maps from the cached trunk output (itself computed, and
   * cached, when missing); an older bundle one entry of all maps serves every need.
   */
  private async imageFeatures(
    image: DecodedImage,
    needs: readonly NeckName[],
    timings: Timings,
    signal: AbortSignal | undefined,
  ): Promise<ImageLeases> {
    let started = performance.now();
    // WebCrypto digests run off the event loop (a 12 MP image is 36 MB of pixels).
    const digest = Buffer.from(await webcrypto.subtle.digest('SHA-256', image.data)).toString(
      'hex',
    );
    timings.hash = elapsedMs(started);
    throwIfCancelled(signal, 'before the image features');
    started = performance.now();
    const identity = `${this.modelKey}|${image.width}x${image.height}|${digest}`;
    const encode = (maps: readonly ImageMapName[], computationSignal: AbortSignal) => {
      this.imageEncodes += 1;
      return this.engine.encodeImage(
        image.data,
        image.width,
        image.height,
        this.cancelTokenFor(computationSignal),
        maps,
      );
    };
    let leases: Lease<Feature>[];
    if (!this.engine.info.visionParts) {
      const lease = await this.acquireImage(`image|${identity}`, 'image', signal, (computation) =>
        encode(['detector', 'tracker'], computation),
      );
      leases = needs.map(() => lease);
      if (leases.length === 0) lease.release();
    } else {
      const derive = async (neck: NeckName, computation: AbortSignal) => {
        const trunk = await this.acquireImage(
          `image-trunk|${identity}`,
          'trunk',
          computation,
          (c) => encode(['trunk'], c),
        );
        try {
          return await this.engine.deriveImage(
            trunk.value as NativeImageEmbedding,
            [neck],
            this.cancelTokenFor(computation),
          );
        } finally {
          trunk.release();
        }
      };
      const settled = await Promise.allSettled(
        needs.map((neck) =>
          this.acquireImage(`image-${neck}|${identity}`, neck, signal, (computation) =>
            derive(neck, computation),
          ),
        ),
      );
      const failed = settled.find((outcome) => outcome.status === 'rejected');
      if (failed !== undefined) {
        for (const outcome of settled) if (outcome.status === 'fulfilled') outcome.value.release();
        throw failed.reason;
      }
      leases = settled.map((outcome) => (outcome as PromiseFulfilledResult<Lease<Feature>>).value);
    }
    timings.image_features = elapsedMs(started);
    const maps: ImageLeases['maps'] = {};
    needs.forEach((neck, i) => (maps[neck] = leases[i].value as NativeImageEmbedding));
    return {
      maps,
      hit: leases.every((lease) => lease.hit),
      release: () => new Set(leases).forEach((lease) => lease.release()),
    };
  }

  /** One image entry of the cache, reserving `size`'s bytes while `compute` runs. */
  private acquireImage(
    key: string,
    size: Exclude<keyof FeatureSizes, 'text'>,
    signal: AbortSignal | undefined,
    compute: (signal: AbortSignal) => Promise<NativeImageEmbedding>,
  ): Promise<Lease<Feature>> {
    return this.cache.acquire(
      key,
      async (computationSignal) => {
        const features = await compute(computationSignal);
        this.featureSizes[size] = features.byteSize;
        return features;
      },
      this.featureSizes[size],
      { signal },
    );
  }

  private async textFeatures(
    texts: readonly string[],
    timings: Timings,
    signal: AbortSignal | undefined,
  ): Promise<Lease<Feature>[]> {
    if (texts.length === 0) return [];
    const started = performance.now();
    const keys = texts.map((text) => `text|${this.modelKey}|${text}`);
    const byKey = new Map(keys.map((key, i) => [key, texts[i]]));
    const leases = await this.cache.acquireMany(
      keys,
      async (missing, computationSignal) => {
        this.textEncodes += missing.length;
        const batch = missing.map((key) => byKey.get(key) as string);
        const tokens = this.tokenizer.encodeBatch(batch);
        const features = await this.engine.encodeText(
          tokens.ids,
          tokens.mask,
          batch.length,
          this.cancelTokenFor(computationSignal),
        );
        if (features.length > 0) this.featureSizes.text = features[0].byteSize;
        return features;
      },
      this.featureSizes.text,
      { signal },
    );
    timings.text_features = elapsedMs(started);
    return leases;
  }

  private async detect(
    image: NativeImageEmbedding,
    queries: { concept: ConceptPlan; text: Feature }[],
    threshold: number,
    timings: Timings,
    signal: AbortSignal | undefined,
  ): Promise<Instances[]> {
    if (queries.length === 0) return [];
    const started = performance.now();
    const found: ConceptInstances[] = await cancellable(
      this.engine.detect(
        image,
        queries.map(({ concept, text }) => ({
          text: text as NativeTextEmbedding,
          boxes: Float32Array.from(concept.boxes.flat()),
          boxLabels: Int32Array.from(concept.boxLabels),
        })),
        { threshold },
        this.cancelTokenFor(signal),
      ),
      'detection',
    );
    timings.detect = elapsedMs(started);
    if (found.length !== queries.length) {
      throw new Error(`detect returned ${found.length} results for ${queries.length} queries`);
    }
    return found.map((instances, q) => {
      const size: [number, number] = [image.height, image.width];
      const count = instances.scores.length;
      return {
        masks: instances.masks.map((counts) => ({ size, counts })),
        boxes: Array.from({ length: count }, (_, i) =>
          Array.from(instances.boxes.subarray(4 * i, 4 * i + 4)),
        ),
        scores: Array.from(instances.scores),
        labels: new Array<string>(count).fill(queries[q].concept.label),
      };
    });
  }

  private async segmentPoints(
    image: NativeImageEmbedding,
    query: PointPlan,
    timings: Timings,
    signal: AbortSignal | undefined,
  ): Promise<Instances> {
    const started = performance.now();
    const [instance] = await cancellable(
      this.engine.segmentPoints(
        image,
        [
          {
            points: Float32Array.from(query.points.flat()),
            pointLabels: Int32Array.from(query.pointLabels),
            box: Float32Array.from(query.box ?? []),
          },
        ],
        this.cancelTokenFor(signal),
      ),
      'the point query',
    );
    timings.points = elapsedMs(started);
    return {
      masks: [{ size: [image.height, image.width], counts: instance.mask }],
      boxes: [Array.from(instance.box)],
      scores: [instance.score],
      labels: [query.label],
    };
  }
}
