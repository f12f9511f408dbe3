/**
 * The whole native surface of the addon (native/binding), typed in one place.
 * Everything here is implemented in C++; src/native/addon.ts is the one loader.
 *
 * Conventions: coordinates are normalized to [0, 1] of the original image; boxes are
 * [cx, cy, w, h]; masks are COCO RLE compressed count strings (column-major, pycocotools).
 */

/** Error codes a NativeError can carry (set by native/binding from core exceptions). */
export type NativeErrorCode =
  | 'MODEL_LOAD' // bundle missing, manifest invalid, module signature mismatch
  | 'BAD_INPUT' // arguments the core refuses (wrong sizes, out-of-range values)
  | 'DEVICE_OOM' // the device ran out of memory; the engine stays usable
  | 'DEVICE_UNAVAILABLE' // e.g. cuda:3 on a machine with one GPU
  | 'ENGINE_CLOSED' // the engine was closed before or while the call ran
  | 'SESSION_CLOSED' // the video tracker was released before the call ran
  | 'CANCELLED' // the caller cancelled the call (NativeCancelToken) before it ran
  | 'INTERNAL'; // anything else (a bug): logged, mapped to 500

/**
 * Made by engine.createCancelToken(); the last argument of an image call. cancel() while the
 * call waits on the executor makes it reject with CANCELLED without running (a running call
 * finishes).
 */
export interface NativeCancelToken {
  cancel(): void;
  readonly cancelled: boolean;
}

export interface EngineOptions {
  /** Directory holding manifest.json and the TorchScript modules. */
  bundleDir: string;
  /** "cpu" or "cuda:N". */
  device: string;
  /**
   * Cross-request batching of encodeImage (absent: off). Concurrent calls share vision
   * encoder calls of up to maxSize (1..64) images; a batch runs once maxSize wait or the
   * oldest has waited waitMs (0..1000). Needs a bundle whose vision encoder takes a batch
   * (exporter version 5): otherwise the load rejects with MODEL_LOAD.
   */
  imageBatch?: ImageBatchOptions;
  /**
   * Run the bundle's AOTInductor package of the vision trunk (tools/export_sam3.py --compile)
   * instead of its TorchScript module. MODEL_LOAD when the bundle has none, or it was compiled
   * for another device type or for CPU instructions this machine lacks.
   */
  compiled?: boolean;
}

export interface ImageBatchOptions {
  maxSize: number;
  waitMs: number;
}

/**
 * Read by C++ from manifest.json after validating it and the module signatures
 * (docs/bundle-format.md). A frozen object.
 */
export interface BundleInfo {
  modelId: string;
  randomWeights: boolean;
  /** The seed of a random bundle, else null. */
  seed: number | null;
  checksum: string;
  formatVersion: number;
  dtype: string;
  /** Square model input side R, pixels. */
  resolution: number;
  patchSize: number;
  /** Side G of the coarsest feature map. */
  featureSize: number;
  /** Side M of the detector's mask logits. */
  maskSize: number;
  /** Detector width D. */
  hiddenSize: number;
  numQueries: number;
  contextLength: number;
  vocabSize: number;
  bosId: number;
  eosId: number;
  padId: number;
  /** CLIP BPE vocabulary, a file name inside the bundle directory. */
  vocabFile: string;
  torchVersion: string;
  transformersVersion: string;
  /** The bundle carries the video tracker modules (format 2): createTracker works. */
  videoAvailable: boolean;
  /** The bundle carries concept tracking (format 3): text prompts in video work. */
  conceptAvailable: boolean;
  /**
   * The vision encoder is split into its trunk and two necks (format 4): encodeImage and
   * deriveImage compute only the maps asked for. Otherwise every encodeImage computes both
   * necks' maps and keeps no trunk output.
   */
  visionParts: boolean;
  /** The engine runs the compiled vision trunk (EngineOptions.compiled). */
  compiled: boolean;
}

/**
 * Maps of an image: the detector's (text and box prompts: detect), the tracker's (clicks:
 * segmentPoints) and the trunk's output, from which deriveImage computes either later.
 */
export type ImageMapName = 'detector' | 'tracker' | 'trunk';

/** Image features computed once by encodeImage; owned by C++ (device memory). */
export interface NativeImageEmbedding {
  /** Original image size, the size masks are returned at. */
  readonly width: number;
  readonly height: number;
  /** Exact bytes held by the cached tensors (tensors shared with another embedding too). */
  readonly byteSize: number;
  /** The maps it holds, in the order detector, tracker, trunk (frozen). */
  readonly maps: readonly ImageMapName[];
  /**
   * Drops this handle's reference to the tensors now (calls already queued keep theirs), so
   * device memory returns without waiting for garbage collection. Idempotent; passing a
   * released embedding to a later call rejects with BAD_INPUT.
   */
  release(): void;
}

/** Text features of one prompt (one row of the text encoder's output). */
export interface NativeTextEmbedding {
  readonly byteSize: number;
  /** As NativeImageEmbedding.release. */
  release(): void;
}

/**
 * One interactive (SAM-style) single-object query on an image: clicks plus an optional box as
 * a region hint. SAM's rule picks the decoder: one click and no box is ambiguous, so three
 * masks are predicted and the one with the highest predicted IoU wins; anything else predicts
 * one mask (with SAM's stability fallback).
 */
export interface PointQuery {
  /** 2 floats per click: x, y normalized to [0, 1]. May be empty when a box is given. */
  points: Float32Array;
  /** One per click: 1 positive (foreground), 0 negative (background). */
  pointLabels: Int32Array;
  /** Empty, or 4 floats: the region hint's cx, cy, w, h normalized. */
  box: Float32Array;
}

/** The object an interactive query selects. */
export interface PointInstance {
  /** The decoder's predicted IoU of the chosen mask (a probability-like score). */
  score: number;
  /** Bounding box of the binarized mask: cx, cy, w, h normalized (zeros when empty). */
  box: Float32Array;
  /** COCO RLE counts string at the original image size. */
  mask: string;
}

/** One concept query: a text embedding plus optional exemplar boxes. */
export interface ConceptQuery {
  text: NativeTextEmbedding;
  /** 4 floats per box: cx, cy, w, h normalized. Empty for text-only. */
  boxes: Float32Array;
  /** One per box: 1 positive, 0 negative. */
  boxLabels: Int32Array;
}

export interface DetectOptions {
  /** Keep instances whose score (sigmoid(logit) * sigmoid(presence)) is above this. */
  threshold: number;
}

/** The instances of one concept query, sorted by score, highest first. */
export interface ConceptInstances {
  scores: Float32Array;
  /** 4 floats per instance: cx, cy, w, h normalized. */
  boxes: Float32Array;
  /** COCO RLE counts strings at the original image size. */
  masks: string[];
}

/**
 * Per-stage wall times of the last calls, milliseconds (for benchmarks and logs): preprocess,
 * vision_encoder (encodeImage's vision pass), vision_neck (deriveImage's necks), text_encoder,
 * detector, point_decoder, postprocess (scores, sorting, boxes; on CUDA also the mask resize),
 * rle (mask encoding and mask boxes; on CPU fused with each mask's resize). Each call
 * overwrites the stages it runs.
 */
export interface StageTimes {
  [stage: string]: number;
}

/** A video tracking session's fixed facts (docs/video-internals.md section 5). */
export interface TrackerOptions {
  /** T: frame indices are 0 .. T - 1. */
  numFrames: number;
  /** Original frame size in pixels: every frame's size and the size masks are returned at. */
  width: number;
  height: number;
  /** Non-conditioning frames kept per object; the least recently written is evicted first. */
  memoryFrames: number;
  /**
   * Concept tracking: mask NMS, hole filling and sprinkle removal as the official SAM3
   * (false: as transformers without its kernels; docs/video-concepts.md).
   */
  officialPostprocess?: boolean;
  /** Most objects tracked (default 0: the bundle's max_num_objects); extra detections are dropped. */
  maxObjects?: number;
}

/** Clicks and an optional box for one object on one frame (the reference's add_point_inputs). */
export interface TrackerPrompt {
  frameIndex: number;
  /** Allocated by the TypeScript session (1, 2, ...); a new id appends an object. */
  objId: number;
  /** 2 numbers per click: x, y normalized to [0, 1]. */
  points: number[];
  /** One per click: 1 positive, 0 negative. */
  pointLabels: number[];
  /** cx, cy, w, h normalized, or null. The decoder sees it as two corners before the clicks. */
  box: number[] | null;
  /**
   * Replace this object's earlier inputs on this frame (else the clicks are appended to them).
   * A box requires true (it must come before every click of the frame).
   */
  clearOld: boolean;
}

export interface TrackedObject {
  objId: number;
  /** The text concept that found it (docs/video-concepts.md); 0 for clicked objects. */
  conceptId: number;
  /** The object score logit is > 0 (concept objects: the returned mask is not empty). */
  present: boolean;
  /** Clicked objects: predicted IoU of the chosen mask. Concepts: the detection score (1 once refined). */
  score: number;
  /** Concept objects: the tracker's score on this frame (0 for clicked objects). */
  trackerScore: number;
  /** Bounds of the binarized mask: cx, cy, w, h normalized; zeros when empty. */
  box: [number, number, number, number];
  /** COCO RLE counts at the tracker's width x height. */
  mask: string;
}

export interface TrackerFrame {
  frameIndex: number;
  /** Clicked objects: every object, in creation order. Concepts: those shown, by id. */
  objects: TrackedObject[];
  /** New detections dropped on this frame by the object limit. */
  objectsDropped: number;
}

/** What the core refuses beyond (src/engine/input-limits.ts holds the server's copy). */
export interface NativeInputLimits {
  maxImageSide: number;
  maxClicksPerQuery: number;
  maxTrackerClicks: number;
  maxExemplarBoxes: number;
}

/**
 * Text prompts on one frame (each text a concept; the same text twice is one concept), each
 * with optional exemplar boxes on that frame: normalized cx, cy, w, h per box, and one label
 * per box (1 positive, 0 negative). Boxes replace the concept's earlier ones on the frame; a
 * text without boxes keeps them.
 */
export interface ConceptPrompt {
  frameIndex: number;
  texts: {
    text: string;
    tokenIds: number[];
    attentionMask: number[];
    boxes?: number[];
    boxLabels?: number[];
  }[];
}

/** One frame of a propagation (docs/video-concepts.md, operation 2). */
export interface StepRequest {
  frameIndex: number;
  reverse: boolean;
  /** Concepts: frames outputs are held back for hotstart; null: the bundle's default. */
  hotstartDelay: number | null;
  /** First frame of a run (drops frames an earlier, cancelled run left held). */
  runStart: boolean;
  /** Last frame of a run: every held frame is emitted. */
  runEnd: boolean;
}

/**
 * One video's tracking state on an engine: a port of transformers' Sam3TrackerVideoModel
 * (memory bank, object pointers, conditioning frames). Each promise-returning call is one
 * task on the engine's executor thread; a tracker's tasks run in submission order. Bad input
 * rejects with BAD_INPUT naming the field; calls after release() reject with SESSION_CLOSED.
 */
export interface NativeTracker {
  /**
   * Adds the prompt (as the reference's add_point_inputs), then runs the frame for every
   * object (forward, not reverse). rgb: width * height * 3 bytes, the frame's pixels, read in
   * place until the promise settles. BAD_INPUT: frameIndex outside the video, labels other
   * than 0/1, non-finite numbers, more than 64 clicks on the frame, a box that is not 4
   * numbers or comes with clearOld false, neither click nor box, a wrong rgb size.
   */
  addPrompt(rgb: Buffer, prompt: TrackerPrompt): Promise<TrackerFrame>;
  /**
   * Runs one frame for every object (the reference's forward(frameIndex, reverse)): an
   * object's prompt frames reuse their outputs; other frames attend to its memories. Clicked
   * objects: resolves with that frame. Concepts: one det-track step, resolving with the
   * frames the hotstart buffer lets out (none, one, or every held frame at runEnd).
   */
  step(rgb: Buffer, request: StepRequest): Promise<TrackerFrame[]>;
  /**
   * Concept tracking starts or grows: each text becomes a concept, then the frame is detected
   * and tracked. BAD_INPUT in a session holding clicked objects or for a bundle without
   * concept tracking.
   */
  addConcept(
    rgb: Buffer,
    prompt: ConceptPrompt,
  ): Promise<{ conceptIds: number[]; frame: TrackerFrame }>;
  /** Forgets an object; false when there is no such object. */
  removeObject(objId: number): Promise<boolean>;
  /** Forgets a concept and its objects; resolves with the ids removed (BAD_INPUT: unknown). */
  removeConcept(conceptId: number): Promise<number[]>;
  /** Forgets every object and concept; resolves with how many objects there were. */
  reset(): Promise<number>;
  /** As of the last completed call, in creation order. */
  objectIds(): number[];
  /** The concept of each object of objectIds() (0: clicked). */
  objectConcepts(): number[];
  /** Frames holding a conditioning (prompt) output of any object, ascending. */
  promptFrames(): number[];
  /** Exact bytes of the tensors held (as of the last completed call; 0 after release). */
  byteSize(): number;
  /** Frees everything now (or when the running call ends). Idempotent. */
  release(): void;
}

export interface NativeEngine {
  readonly info: BundleInfo;
  readonly device: string;
  /**
   * rgb: width * height * 3 bytes, row-major RGB (uint8). The buffer is read on the device
   * executor thread without a copy; do not modify it until the promise settles.
   */
  /**
   * The image's features: `maps` (default detector and tracker; BAD_INPUT when empty) on a
   * bundle with visionParts, both necks' maps otherwise.
   */
  encodeImage(
    rgb: Buffer,
    width: number,
    height: number,
    cancel?: NativeCancelToken,
    maps?: readonly ImageMapName[],
  ): Promise<NativeImageEmbedding>;
  /**
   * An embedding of the same image holding `maps`: held maps are shared, the others computed
   * from the image's trunk output. BAD_INPUT when one is neither held nor computable.
   */
  deriveImage(
    image: NativeImageEmbedding,
    maps: readonly ImageMapName[],
    cancel?: NativeCancelToken,
  ): Promise<NativeImageEmbedding>;
  /**
   * ids and mask: batch * contextLength values each (row-major). Returns one embedding per row.
   */
  encodeText(
    ids: Int32Array,
    mask: Int32Array,
    batch: number,
    cancel?: NativeCancelToken,
  ): Promise<NativeTextEmbedding[]>;
  /**
   * Runs the queries through the detector in batches of up to 16 (one call for typical
   * requests). Text-only queries get one padding box (label -10); queries with fewer boxes
   * than the batch's largest are padded the same way.
   */
  detect(
    image: NativeImageEmbedding,
    queries: ConceptQuery[],
    options: DetectOptions,
    cancel?: NativeCancelToken,
  ): Promise<ConceptInstances[]>;
  /**
   * Interactive queries on the image's tracker features (point_decoder modules): each query
   * gives exactly one instance, in query order (one decoder call per query). The decoder sees
   * the clicks in pixels of the R x R model input, then a box as its two corners (labels 2 and
   * 3). The mask is the chosen mask's logits resized bilinearly to the image size and
   * binarized at > 0, as detect's masks. Rejects with BAD_INPUT, naming the query: points not
   * 2 per label, a label other than 0/1, non-finite coordinates, a box that is not empty or 4
   * numbers, neither a click nor a box, more than 64 clicks, a released embedding.
   */
  segmentPoints(
    image: NativeImageEmbedding,
    queries: PointQuery[],
    cancel?: NativeCancelToken,
  ): Promise<PointInstance[]>;
  /** A token for the image calls above (synchronous). */
  createCancelToken(): NativeCancelToken;
  /**
   * A video tracking session (synchronous). Throws NativeError BAD_INPUT when the bundle has
   * no tracker modules (info.videoAvailable false) or an option is out of range (numFrames
   * 1..10^7, sides 1..16384, memoryFrames >= 1).
   */
  createTracker(options: TrackerOptions): NativeTracker;
  /** Executor tasks completed on this engine so far, failed ones included (one per image). */
  tasksRun(): number;
  /** encodeImage's vision encoder calls so far, by images per call ({"1": 12, "4": 3}). */
  imageBatchCounts(): Record<string, number>;
  /**
   * Fault injection for the fault tests: the next `count` model calls on this engine reject
   * with DEVICE_OOM without running, as on a device out of memory; the engine stays usable.
   */
  injectDeviceOutOfMemory(count: number): void;
  /** Stage times of the most recent calls on this engine (tracker calls add memory_attention,
   * tracker_decoder and memory_encoder). */
  lastStageTimes(): StageTimes;
  /** Stops the executor after the queued work; later calls reject with ENGINE_CLOSED. */
  close(): Promise<void>;
}

export interface NativeAddon {
  Engine: {
    /** Loads the bundle on the device (on the executor thread). */
    load(options: EngineOptions): Promise<NativeEngine>;
  };
  /**
   * COCO RLE counts (as pycocotools' mask.encode) of a row-major height x width mask; nonzero
   * bytes are foreground. Synchronous; for tests and tools. Throws BAD_INPUT on a size mismatch.
   */
  encodeRle(mask: Uint8Array, height: number, width: number): string;
  /**
   * Stops every engine of this thread's environment: queued calls reject with ENGINE_CLOSED,
   * the running model call finishes first (this blocks until it does). The loader calls it on
   * process 'exit', since exiting under a running model call crashes in LibTorch's teardown.
   */
  shutdown(): void;
  /** Bytes held by all video trackers of the process not yet released (leak checks). */
  liveTrackerBytes(): number;
  /**
   * The caching allocator's figures for an accelerator device ("cuda:N"): bytes in tensors,
   * reserved from the device (in tensors and cached), and the peak in tensors; null for "cpu",
   * an absent device, or without CUDA.
   */
  deviceMemory(
    device: string,
  ): { allocatedBytes: number; reservedBytes: number; peakAllocatedBytes: number } | null;
  /** Version strings of the linked LibTorch and whether CUDA is usable. */
  runtimeInfo(): {
    torchVersion: string;
    cudaAvailable: boolean;
    cudaDeviceCount: number;
    /** Bytes held by all image and text embeddings of the process not yet freed (leak checks). */
    liveEmbeddingBytes: number;
    limits: NativeInputLimits;
  };
}
