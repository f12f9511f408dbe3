/**
 * Segmenter: the image-segmentation facade the server talks to. It keeps the native engine
 * behind one method, so a feature cache can slot in between without touching the routes.
 *
 * Contract of `segment`: every text prompt is one concept query; all texts go through the
 * text encoder as one batch and all queries through the detector as one batch; results are
 * concatenated in the order of the prompts, and the instances of one prompt keep the engine's
 * order (score, highest first).
 */
import { performance } from 'node:perf_hooks';
import type { NativeAddon, NativeEngine } from '../native/types';
import { bundleVocabPath, type BundleManifest } from './bundle-manifest';
import type { DecodedImage } from './image-decoder';
import { ClipTokenizer } from './tokenizer';

/** What the segmenter needs from a tokenizer (ClipTokenizer satisfies it). */
export interface PromptTokenizer {
  readonly contextLength: number;
  /** Row-major [texts.length, contextLength] ids and attention mask (1 token, 0 padding). */
  encodeBatch(texts: readonly string[]): { ids: Int32Array; mask: Int32Array };
}

export interface TextPrompt {
  type: 'text';
  text: string;
}

export interface SegmentRequest {
  image: DecodedImage;
  /** Validated upstream: at least one prompt. */
  prompts: readonly TextPrompt[];
  /** Keep instances whose score (a probability) is above this. */
  confidenceThreshold: number;
}

/** COCO RLE as pycocotools writes it: size is [height, width], counts column-major. */
export interface RleMask {
  size: [number, number];
  counts: string;
}

export interface SegmentResult {
  masks: RleMask[];
  /** Normalized [cx, cy, w, h] per instance. */
  boxes: number[][];
  /** Probabilities, one per instance. */
  scores: number[];
  /** The prompt text each instance answers. */
  labels: string[];
  num_masks: number;
  image_size: { width: number; height: number };
  /** Wall time of the engine calls (image encode, text encode, detect), milliseconds. */
  inference_time_ms: number;
}

/** What a loaded image model reports about itself (for /, /health and logs). */
export interface ImageModelInfo {
  modelId: string;
  randomWeights: boolean;
  checksum: string;
  formatVersion: number;
  resolution: number;
  dtype: string;
  device: string;
}

export interface LoadSegmenterOptions {
  bundleDir: string;
  device: string;
  /** CLIP vocabulary; null uses the bundle's own. */
  bpePath: string | null;
  /** IMAGE_MODEL_RESOLUTION: must equal the bundle's resolution. */
  expectedResolution: number;
}

/** Model loading failed for a reason a person can act on (message names the cause). */
export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
}

export class Segmenter {
  constructor(
    private readonly engine: NativeEngine,
    private readonly tokenizer: PromptTokenizer,
  ) {
    if (tokenizer.contextLength !== engine.info.contextLength) {
      throw new ModelLoadError(
        `tokenizer context length ${tokenizer.contextLength} differs from the bundle's ` +
          `${engine.info.contextLength}`,
      );
    }
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
    if (manifest.resolution !== options.expectedResolution) {
      throw new ModelLoadError(
        `IMAGE_MODEL_RESOLUTION is ${options.expectedResolution} but the bundle's resolution is ` +
          `${manifest.resolution}`,
      );
    }
    const vocabPath = options.bpePath ?? bundleVocabPath(options.bundleDir, manifest);
    const tokenizer = await ClipTokenizer.fromFile(vocabPath, manifest.text.context_length);
    const engine = await addon.Engine.load({
      bundleDir: options.bundleDir,
      device: options.device,
    });
    try {
      return new Segmenter(engine, tokenizer);
    } catch (error) {
      await engine.close();
      throw error;
    }
  }

  get info(): ImageModelInfo {
    const info = this.engine.info;
    return {
      modelId: info.modelId,
      randomWeights: info.randomWeights,
      checksum: info.checksum,
      formatVersion: info.formatVersion,
      resolution: info.resolution,
      dtype: info.dtype,
      device: this.engine.device,
    };
  }

  async segment(request: SegmentRequest): Promise<SegmentResult> {
    const { image, prompts, confidenceThreshold } = request;
    const started = performance.now();

    // Identical texts are encoded once; each prompt still gets its own query and results.
    const uniqueTexts = [...new Set(prompts.map((prompt) => prompt.text))];
    const tokens = this.tokenizer.encodeBatch(uniqueTexts);
    const [embedding, textEmbeddings] = await Promise.all([
      this.engine.encodeImage(image.data, image.width, image.height),
      this.engine.encodeText(tokens.ids, tokens.mask, uniqueTexts.length),
    ]);
    const textIndex = new Map(uniqueTexts.map((text, index) => [text, index]));
    const queries = prompts.map((prompt) => ({
      text: textEmbeddings[textIndex.get(prompt.text) ?? 0],
      boxes: new Float32Array(0),
      boxLabels: new Int32Array(0),
    }));
    const instancesPerQuery = await this.engine.detect(embedding, queries, {
      threshold: confidenceThreshold,
    });
    if (instancesPerQuery.length !== queries.length) {
      throw new Error(`detect returned ${instancesPerQuery.length} results for ${queries.length}`);
    }
    const inferenceTimeMs = performance.now() - started;

    const result: SegmentResult = {
      masks: [],
      boxes: [],
      scores: [],
      labels: [],
      num_masks: 0,
      image_size: { width: image.width, height: image.height },
      inference_time_ms: Math.round(inferenceTimeMs * 10) / 10,
    };
    instancesPerQuery.forEach((instances, queryIndex) => {
      const label = prompts[queryIndex].text;
      instances.scores.forEach((score, index) => {
        result.scores.push(score);
        result.boxes.push(Array.from(instances.boxes.subarray(4 * index, 4 * index + 4)));
        result.masks.push({ size: [image.height, image.width], counts: instances.masks[index] });
        result.labels.push(label);
      });
    });
    result.num_masks = result.scores.length;
    return result;
  }

  /** Stops the engine after its queued work; later calls reject with ENGINE_CLOSED. */
  async close(): Promise<void> {
    await this.engine.close();
  }
}
