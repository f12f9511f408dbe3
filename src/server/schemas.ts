/**
 * JSON Schemas (draft 2020-12, the dialect of OpenAPI 3.1) of every request and response.
 * The same objects validate requests (ajv) and are published in /openapi.json, so a field is
 * declared once; each request schema sits beside the TypeScript type it validates into.
 * (ajv's JSONSchemaType is not used: it demands `nullable` on optional fields, which would let
 * `null` through and is not part of OpenAPI 3.1.)
 *
 * Every object forbids unknown properties, every string has a maxLength and every array a
 * maxItems; coordinates are normalized to [0, 1] (JSON has no NaN or Infinity).
 */
import { MAX_OBJECT_CLICKS } from '../engine/input-limits';

/** A JSON Schema object (draft 2020-12). */
export type JsonSchema = Readonly<Record<string, unknown>>;

/** Most prompts in one request (each text prompt is one detector query of a batch). */
export const MAX_PROMPTS = 64;
/** Longest prompt text, UTF-16 units; the tokenizer keeps 30 tokens of it anyway. */
export const MAX_TEXT_LENGTH = 1000;
/** Most clicks in one point prompt. */
export const MAX_POINTS = 64;
/** Most box prompts in one request (exemplars are padded to the longest list per batch). */
export const MAX_BOX_PROMPTS = 32;
/** Most text prompts in one cached-features request (run in detector batches of 16). */
export const MAX_CACHED_TEXT_PROMPTS = 128;

export interface TextPromptBody {
  type: 'text';
  text: string;
}

export interface BoxPromptBody {
  type: 'box';
  /** Normalized [cx, cy, w, h]. */
  box: [number, number, number, number];
  /** true: positive exemplar; false: negative. Defaults to true. */
  label?: boolean;
}

export interface PointPromptBody {
  type: 'point';
  /** Normalized [x, y] per click. */
  points: [number, number][];
  /** One per point: 1 positive (foreground), 0 negative (background). */
  point_labels: number[];
}

export type PromptBody = TextPromptBody | BoxPromptBody | PointPromptBody;

export interface SegmentRequestBody {
  image: string;
  prompts: PromptBody[];
  confidence_threshold?: number;
  return_visualization?: boolean;
}

const unitInterval = { type: 'number', minimum: 0, maximum: 1 } as const;

export const textPromptSchema = {
  type: 'object',
  description: 'A concept named by text; every instance of it is returned.',
  required: ['type', 'text'],
  additionalProperties: false,
  properties: {
    type: { type: 'string', const: 'text' },
    text: {
      type: 'string',
      minLength: 1,
      maxLength: MAX_TEXT_LENGTH,
      pattern: '\\S',
      description: 'The concept, e.g. "person" or "red car".',
    },
  },
} as const;

export const boxPromptSchema = {
  type: 'object',
  description:
    'A box. With text prompts: a visual exemplar of the concept of the text prompt before it ' +
    '(or of the first text prompt). Without text: boxes are exemplars of one "visual" concept ' +
    '(label "box"), or, beside point prompts, the one region hint of the clicked object.',
  required: ['type', 'box'],
  additionalProperties: false,
  properties: {
    type: { type: 'string', const: 'box' },
    box: {
      type: 'array',
      description: 'Normalized [cx, cy, w, h] in [0, 1] of the image size.',
      items: unitInterval,
      minItems: 4,
      maxItems: 4,
    },
    label: {
      type: 'boolean',
      description:
        'true: positive exemplar (default); false: negative exemplar. Ignored for a region hint.',
    },
  },
} as const;

export const pointPromptSchema = {
  type: 'object',
  description:
    'Clicks on one object (interactive prompt). All point prompts of a request select one ' +
    'object together (label "point"); its score is the predicted IoU of its mask. One click ' +
    'without a box is ambiguous: three masks are predicted and the best is returned.',
  required: ['type', 'points', 'point_labels'],
  additionalProperties: false,
  properties: {
    type: { type: 'string', const: 'point' },
    points: {
      type: 'array',
      description: 'Normalized [x, y] in [0, 1] per click.',
      items: { type: 'array', items: unitInterval, minItems: 2, maxItems: 2 },
      minItems: 1,
      maxItems: MAX_POINTS,
    },
    point_labels: {
      type: 'array',
      description: 'One per point: 1 positive (foreground), 0 negative (background).',
      items: { type: 'integer', enum: [0, 1] },
      minItems: 1,
      maxItems: MAX_POINTS,
    },
  },
} as const;

/** One prompt of an image or video request: text, box or point, told apart by `type`. */
const promptSchema = {
  type: 'object',
  required: ['type'],
  properties: { type: { type: 'string', enum: ['text', 'box', 'point'] } },
  discriminator: { propertyName: 'type' },
  oneOf: [textPromptSchema, boxPromptSchema, pointPromptSchema],
} as const;

/** The base64 image of a request; `maxImageChars` states the body limit in the schema. */
function imageSchema(maxImageChars: number): JsonSchema {
  return {
    type: 'string',
    minLength: 1,
    maxLength: maxImageChars,
    description:
      'Base64 JPEG, PNG or WebP (standard alphabet, padded); a data:image/...;base64, prefix is accepted.',
  };
}

/**
 * The request schema of POST /api/v1/image/segment. `maxImageChars` bounds the base64 string
 * (the JSON body limit bounds it anyway; the schema states it).
 */
export function segmentRequestSchema(maxImageChars: number, defaultThreshold: number): JsonSchema {
  return {
    type: 'object',
    required: ['image', 'prompts'],
    additionalProperties: false,
    properties: {
      image: imageSchema(maxImageChars),
      prompts: {
        type: 'array',
        description:
          'Text prompts (with their exemplar boxes) are concept queries, point prompts (with ' +
          'at most one box as a region hint) one interactive query; results are concatenated ' +
          'in request order.',
        minItems: 1,
        maxItems: MAX_PROMPTS,
        contains: { type: 'object', properties: { type: { const: 'box' } }, required: ['type'] },
        minContains: 0,
        maxContains: MAX_BOX_PROMPTS,
        items: promptSchema,
      },
      confidence_threshold: {
        ...unitInterval,
        default: defaultThreshold,
        description:
          'Keep concept instances whose score (a probability) is above this; the object ' +
          'selected by point prompts is always returned.',
      },
      return_visualization: {
        type: 'boolean',
        default: false,
        description:
          'Also write a PNG of the image with the masks, boxes and labels drawn on it; ' +
          'visualization_url is its path on this server.',
      },
    },
  };
}

export interface CachedFeaturesRequestBody {
  image: string;
  text_prompts: string[];
  confidence_threshold?: number;
}

/** The request schema of POST /api/v1/image/cached-features. */
export function cachedFeaturesRequestSchema(
  maxImageChars: number,
  defaultThreshold: number,
): JsonSchema {
  return {
    type: 'object',
    required: ['image', 'text_prompts'],
    additionalProperties: false,
    properties: {
      image: imageSchema(maxImageChars),
      text_prompts: {
        type: 'array',
        description:
          'Concepts to find; the image is encoded once (or taken from the cache) and all ' +
          'prompts go through the detector together.',
        minItems: 1,
        maxItems: MAX_CACHED_TEXT_PROMPTS,
        items: { type: 'string', minLength: 1, maxLength: MAX_TEXT_LENGTH, pattern: '\\S' },
      },
      confidence_threshold: {
        ...unitInterval,
        default: defaultThreshold,
        description: 'Keep instances whose score (a probability) is above this.',
      },
    },
  };
}

const rleMaskSchema = {
  type: 'object',
  description: 'COCO RLE (pycocotools mask.encode), column-major, at the image resolution.',
  required: ['size', 'counts'],
  additionalProperties: false,
  properties: {
    size: {
      type: 'array',
      description: '[height, width] in pixels.',
      items: { type: 'integer', minimum: 1 },
      minItems: 2,
      maxItems: 2,
    },
    counts: { type: 'string', description: 'Compressed RLE counts string.' },
  },
} as const;

export const segmentResponseSchema = {
  type: 'object',
  required: [
    'masks',
    'boxes',
    'scores',
    'labels',
    'num_masks',
    'image_size',
    'visualization_url',
    'inference_time_ms',
  ],
  additionalProperties: false,
  properties: {
    masks: { type: 'array', items: rleMaskSchema },
    boxes: {
      type: 'array',
      description: 'Normalized [cx, cy, w, h] per instance.',
      items: { type: 'array', items: unitInterval, minItems: 4, maxItems: 4 },
    },
    scores: {
      type: 'array',
      description:
        'Per instance: sigmoid(query logit) x sigmoid(presence logit) for concepts, the ' +
        'predicted IoU for the clicked object.',
      items: unitInterval,
    },
    labels: {
      type: 'array',
      description: 'The prompt each instance answers: its text, "box" or "point".',
      items: { type: 'string' },
    },
    num_masks: { type: 'integer', minimum: 0 },
    image_size: {
      type: 'object',
      required: ['width', 'height'],
      additionalProperties: false,
      properties: {
        width: { type: 'integer', minimum: 1 },
        height: { type: 'integer', minimum: 1 },
      },
    },
    visualization_url: { type: ['string', 'null'] },
    inference_time_ms: { type: 'number', minimum: 0 },
  },
} as const;

export const cachedFeaturesResponseSchema = {
  type: 'object',
  required: ['results', 'cache_hit', 'inference_time_ms'],
  additionalProperties: false,
  properties: {
    results: {
      type: 'array',
      description: 'One entry per text prompt, in request order.',
      items: {
        type: 'object',
        required: ['prompt', 'masks', 'boxes', 'scores', 'num_masks'],
        additionalProperties: false,
        properties: {
          prompt: { type: 'string' },
          masks: segmentResponseSchema.properties.masks,
          boxes: segmentResponseSchema.properties.boxes,
          scores: segmentResponseSchema.properties.scores,
          num_masks: { type: 'integer', minimum: 0 },
        },
      },
    },
    cache_hit: {
      type: 'boolean',
      description: 'Whether the image features came from the feature cache.',
    },
    inference_time_ms: { type: 'number', minimum: 0 },
  },
} as const;

export const errorResponseSchema = {
  type: 'object',
  required: ['error'],
  additionalProperties: false,
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      additionalProperties: false,
      properties: {
        code: { type: 'string', description: 'snake_case error code' },
        message: { type: 'string', description: 'For a person' },
      },
    },
  },
} as const;

const modelInfoSchema = {
  type: ['object', 'null'],
  description: 'The loaded model bundle (null until its manifest has been read).',
  required: ['id', 'checksum', 'random_weights', 'bundle_format_version', 'resolution', 'dtype'],
  additionalProperties: false,
  properties: {
    id: { type: 'string' },
    checksum: { type: 'string' },
    random_weights: { type: 'boolean' },
    bundle_format_version: { type: 'integer' },
    resolution: { type: 'integer' },
    dtype: { type: 'string' },
  },
} as const;

export const healthResponseSchema = {
  type: 'object',
  required: ['status', 'model', 'devices', 'sessions', 'random_weights'],
  additionalProperties: false,
  properties: {
    status: { type: 'string', enum: ['ok', 'loading', 'degraded'] },
    model: modelInfoSchema,
    devices: {
      type: 'array',
      items: {
        type: 'object',
        required: ['device', 'role', 'status'],
        additionalProperties: false,
        properties: {
          device: { type: 'string', description: '"cpu" or "cuda:N"' },
          role: {
            type: 'string',
            enum: ['image', 'video'],
            description: 'The image model, or one of the devices video sessions go on.',
          },
          status: {
            type: 'string',
            enum: ['loading', 'ready', 'failed', 'disabled', 'unavailable', 'stopping'],
            description:
              'unavailable (video): the bundle has no tracker modules; images are still served.',
          },
        },
      },
    },
    sessions: { type: 'integer', minimum: 0, description: 'Open video sessions.' },
    random_weights: { type: 'boolean' },
    warning: { type: 'string', description: 'Present when the bundle has random weights.' },
  },
} as const;

export const serverInfoSchema = {
  type: 'object',
  required: ['name', 'version', 'status', 'model', 'random_weights', 'docs', 'openapi'],
  additionalProperties: false,
  properties: {
    name: { type: 'string' },
    version: { type: 'string' },
    status: { type: 'string', enum: ['ok', 'loading', 'degraded'] },
    model: modelInfoSchema,
    random_weights: { type: 'boolean' },
    warning: { type: 'string' },
    docs: { type: 'string' },
    openapi: { type: 'string' },
  },
} as const;

// ---------------------------------------------------------------------------------------------
// Video sessions (SPEC.md "Video sessions").

/** Session ids chosen by clients (else a UUID, which matches too). */
export const SESSION_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$';
export const MAX_SESSION_ID_LENGTH = 64;
/** Longest video_url; longer URLs are refused before any parsing. */
export const MAX_VIDEO_URL_LENGTH = 2048;
/** Longest video_path (Linux PATH_MAX). */
export const MAX_VIDEO_PATH_LENGTH = 4096;
/** Most entries in gpu_ids. */
export const MAX_GPU_IDS = 64;
/** Largest frame index or frame count a request may name (the probe limit bounds videos). */
export const MAX_FRAME_NUMBER = 2 ** 31 - 1;
/** Largest object id. */
export const MAX_OBJECT_ID = 2 ** 31 - 1;
/** Most clicks (over all point prompts) of one video prompt request: the tracker's limit. */
export { MAX_OBJECT_CLICKS };
/** Largest hotstart_delay, frames. */
export const MAX_HOTSTART_DELAY = 10_000;

export type GpuId = number | 'cpu';

export interface StartSessionRequestBody {
  video_url?: string;
  video_base64?: string;
  video_path?: string;
  session_id?: string;
  gpu_ids?: GpuId[];
}

/** The video source fields of a start request: exactly one must be given. */
export const VIDEO_SOURCE_FIELDS = ['video_url', 'video_base64', 'video_path'] as const;

const sessionIdSchema = {
  type: 'string',
  minLength: 1,
  maxLength: MAX_SESSION_ID_LENGTH,
  pattern: SESSION_ID_PATTERN,
  description: 'The session id: 1 to 64 of A-Z, a-z, 0-9, "_" and "-".',
} as const;

export const gpuIdsSchema = {
  type: 'array',
  description:
    'Devices the session may be placed on: GPU indices as in VIDEO_GPU_LIST, or "cpu" on a ' +
    'server whose video devices are the CPU. The session goes on the one with the fewest open ' +
    'sessions. A device the server does not use for video is refused (invalid_device). ' +
    'Default: every video device.',
  minItems: 1,
  maxItems: MAX_GPU_IDS,
  uniqueItems: true,
  items: {
    oneOf: [
      { type: 'integer', minimum: 0, maximum: 1023 },
      { type: 'string', const: 'cpu' },
    ],
  },
} as const;

/** The JSON request schema of POST /api/v1/video/session/start. */
export function startSessionRequestSchema(maxBase64Chars: number): JsonSchema {
  return {
    type: 'object',
    description: 'Exactly one of video_url, video_base64 and video_path.',
    additionalProperties: false,
    // (`properties` restated so that ajv's strictRequired sees each field defined.)
    oneOf: VIDEO_SOURCE_FIELDS.map((field) => ({
      required: [field],
      properties: { [field]: true },
    })),
    properties: {
      video_url: {
        type: 'string',
        minLength: 1,
        maxLength: MAX_VIDEO_URL_LENGTH,
        description:
          'An http(s) URL the server downloads the video from (public addresses only; every ' +
          'redirect is checked again; size and time limited).',
      },
      video_base64: {
        type: 'string',
        minLength: 1,
        maxLength: maxBase64Chars,
        description: 'The video file, base64 (standard alphabet); a data: URL prefix is accepted.',
      },
      video_path: {
        type: 'string',
        minLength: 1,
        maxLength: MAX_VIDEO_PATH_LENGTH,
        description:
          'A video file on the server, inside one of the directories of VIDEO_PATH_ROOTS ' +
          '(checked after resolving symlinks). The server only reads it.',
      },
      session_id: sessionIdSchema,
      gpu_ids: gpuIdsSchema,
    },
  };
}

/** Text fields of a multipart start request (beside its `video` file). */
export interface StartSessionFormFields {
  session_id?: string;
  /** JSON array text, e.g. "[0, 1]" or "[\"cpu\"]". */
  gpu_ids?: string;
}

/** Longest text field of a multipart start request. */
export const MAX_FORM_FIELD_LENGTH = 1024;

export const startSessionFormSchema = {
  type: 'object',
  description:
    'multipart/form-data: the video file in the `video` field (one file, at most ' +
    'MAX_UPLOAD_SIZE_MB), optional text fields session_id and gpu_ids (a JSON array).',
  additionalProperties: false,
  required: ['video'],
  properties: {
    video: {
      type: 'string',
      contentMediaType: 'application/octet-stream',
      description: 'The video file.',
    },
    session_id: sessionIdSchema,
    gpu_ids: {
      type: 'string',
      maxLength: MAX_FORM_FIELD_LENGTH,
      description: 'A JSON array as gpu_ids of the JSON request, e.g. [0, 1] or ["cpu"].',
    },
  },
} as const;

/** gpu_ids alone (the multipart field, once parsed from its JSON text). */
export const gpuIdsFieldSchema = {
  type: 'object',
  required: ['gpu_ids'],
  additionalProperties: false,
  properties: { gpu_ids: gpuIdsSchema },
} as const;

export const startSessionFieldsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    session_id: sessionIdSchema,
    gpu_ids: startSessionFormSchema.properties.gpu_ids,
  },
} as const;

export interface VideoPromptRequestBody {
  frame_index: number;
  prompts: PromptBody[];
  obj_id?: number | null;
}

export const videoPromptRequestSchema = {
  type: 'object',
  required: ['frame_index', 'prompts'],
  additionalProperties: false,
  properties: {
    frame_index: {
      type: 'integer',
      minimum: 0,
      maximum: MAX_FRAME_NUMBER,
      description: "The frame the prompts are on (0-based; below the video's total_frames).",
    },
    prompts: {
      type: 'array',
      description:
        `Clicks: point prompts and at most one box prompt, all for one object: the clicks of every ` +
        `point prompt together (at most ${MAX_OBJECT_CLICKS}) are the object's clicks on this ` +
        `frame and replace its earlier clicks there (send every click again to refine); a box ` +
        `is the object's box. Concepts: text prompts, each a concept to find and track, every ` +
        `box after a text being its exemplar on this frame. Clicks do not go with a text.`,
      minItems: 1,
      maxItems: MAX_PROMPTS,
      items: promptSchema,
    },
    obj_id: {
      type: ['integer', 'null'],
      minimum: 1,
      maximum: MAX_OBJECT_ID,
      default: null,
      description:
        'The object: null (or absent) creates a new one (the largest id + 1, from 1); an ' +
        'unknown id creates that object; a known id refines it. At most VIDEO_MAX_OBJECTS ' +
        'objects per session (too_many_objects).',
    },
  },
} as const;

export type PropagationDirectionBody = 'forward' | 'backward' | 'both';

export interface PropagateRequestBody {
  direction?: PropagationDirectionBody;
  start_frame_index?: number;
  max_frames?: number;
  stream?: boolean;
  hotstart_delay?: number;
}

const propagateProperties = {
  direction: {
    type: 'string',
    enum: ['forward', 'backward', 'both'],
    default: 'forward',
    description:
      'forward: start to the last frame; backward: start down to frame 0; both: forward from ' +
      'start, then backward from start - 1.',
  },
  start_frame_index: {
    type: 'integer',
    minimum: 0,
    maximum: MAX_FRAME_NUMBER,
    description: 'First frame; default: the first frame holding a prompt of any object.',
  },
  max_frames: {
    type: 'integer',
    minimum: 1,
    maximum: MAX_FRAME_NUMBER,
    description: 'Frames processed per direction; default: to the end of the video.',
  },
  hotstart_delay: {
    type: 'integer',
    minimum: 0,
    maximum: MAX_HOTSTART_DELAY,
    description:
      'Text-prompted (concept) tracking: frames a frame is held back before it is emitted, so ' +
      'that tracks that do not survive (hotstart) are removed from it; also the window of the ' +
      "hotstart rules. Default and maximum: the model's hotstart_delay (15 for SAM3); 0 emits " +
      'every frame at once and removes no track by hotstart. No effect on clicked objects.',
  },
} as const;

/** The request schema of POST .../propagate (`stream`) or of the WebSocket message (no `stream`). */
export function propagateRequestSchema(options: { stream: boolean }): JsonSchema {
  return {
    type: 'object',
    additionalProperties: false,
    properties: options.stream
      ? {
          ...propagateProperties,
          stream: {
            type: 'boolean',
            default: false,
            description:
              'true: answer application/x-ndjson, one message per line as the WebSocket sends ' +
              'them ({"type": "frame", ...} per frame, then {"type": "complete", ...}).',
          },
        }
      : propagateProperties,
  };
}

const videoInfoSchema = {
  type: 'object',
  description: 'From the probe of the video file.',
  required: ['total_frames', 'fps', 'resolution', 'duration_seconds'],
  additionalProperties: false,
  properties: {
    total_frames: { type: 'integer', minimum: 1 },
    fps: { type: 'number', minimum: 0 },
    resolution: {
      type: 'object',
      required: ['width', 'height'],
      additionalProperties: false,
      properties: {
        width: { type: 'integer', minimum: 1 },
        height: { type: 'integer', minimum: 1 },
      },
    },
    duration_seconds: { type: 'number', minimum: 0 },
  },
} as const;

export const startSessionResponseSchema = {
  type: 'object',
  required: ['session_id', 'video_info', 'status'],
  additionalProperties: false,
  properties: {
    session_id: { type: 'string' },
    video_info: videoInfoSchema,
    status: { type: 'string', const: 'ready' },
  },
} as const;

const normalizedBoxSchema = {
  type: 'array',
  description: 'Normalized [cx, cy, w, h] of the binarized mask (zeros when it is empty).',
  items: unitInterval,
  minItems: 4,
  maxItems: 4,
} as const;

const objectsDroppedSchema = {
  type: 'integer',
  minimum: 1,
  description:
    'Text concepts: new detections on this frame not tracked because the session holds the ' +
    'most objects allowed (VIDEO_MAX_OBJECTS, or the model limit); absent when none.',
} as const;

export const videoPromptResponseSchema = {
  type: 'object',
  description: 'Every object of the session on the prompted frame; the arrays are aligned.',
  required: ['frame_index', 'obj_id', 'masks', 'boxes', 'scores', 'present', 'status'],
  additionalProperties: false,
  properties: {
    frame_index: { type: 'integer', minimum: 0 },
    obj_id: { type: 'array', items: { type: 'integer', minimum: 1 } },
    masks: { type: 'array', items: rleMaskSchema },
    boxes: { type: 'array', items: normalizedBoxSchema },
    scores: {
      type: 'array',
      description: 'Predicted IoU of each mask.',
      items: unitInterval,
    },
    present: {
      type: 'array',
      description: 'Whether the tracker sees each object on this frame (object score > 0).',
      items: { type: 'boolean' },
    },
    concepts: {
      type: 'array',
      description:
        'Text prompts: the concept of each text, in order (the same text is one concept).',
      items: {
        type: 'object',
        required: ['concept_id', 'text'],
        additionalProperties: false,
        properties: { concept_id: { type: 'integer', minimum: 1 }, text: { type: 'string' } },
      },
    },
    concept_ids: {
      type: 'array',
      description: 'Text prompts: the concept of each object.',
      items: { type: 'integer', minimum: 1 },
    },
    tracker_scores: {
      type: 'array',
      description: "Text prompts: the tracker's score of each object.",
      items: unitInterval,
    },
    objects_dropped: objectsDroppedSchema,
    status: { type: 'string', const: 'prompt_added' },
  },
} as const;

const trackedObjectSchema = {
  type: 'object',
  required: ['id', 'mask', 'box', 'score', 'present'],
  additionalProperties: false,
  properties: {
    id: { type: 'integer', minimum: 1 },
    mask: rleMaskSchema,
    box: normalizedBoxSchema,
    score: {
      ...unitInterval,
      description:
        'Clicked objects: predicted IoU of the mask. Text concepts: the detection score (1 ' +
        'once refined by clicks).',
    },
    present: {
      type: 'boolean',
      description:
        'Clicked objects: object score > 0 on this frame. Concepts: the mask is not empty.',
    },
    concept_id: {
      type: 'integer',
      minimum: 1,
      description: 'Objects found by a text prompt: their concept.',
    },
    tracker_score: {
      ...unitInterval,
      description: "Objects found by a text prompt: the tracker's score on this frame.",
    },
  },
} as const;

const frameResultProperties = {
  frame_index: { type: 'integer', minimum: 0 },
  objects: {
    type: 'array',
    description:
      'Clicked objects: every object of the session, in creation order. Text concepts: the ' +
      'objects shown on the frame, by id (tracks removed by hotstart, suppressed or empty are ' +
      'left out).',
    items: trackedObjectSchema,
  },
  objects_dropped: objectsDroppedSchema,
} as const;

export const propagateResponseSchema = {
  type: 'object',
  required: ['session_id', 'results', 'total_frames', 'processing_time_ms'],
  additionalProperties: false,
  properties: {
    session_id: { type: 'string' },
    results: {
      type: 'object',
      description: 'By frame index (a decimal string), each frame once.',
      additionalProperties: {
        type: 'object',
        required: ['frame_index', 'objects'],
        additionalProperties: false,
        properties: frameResultProperties,
      },
    },
    total_frames: { type: 'integer', minimum: 0, description: 'Frames processed.' },
    processing_time_ms: { type: 'number', minimum: 0 },
  },
} as const;

/** One message of a propagation stream (WebSocket message, or one NDJSON line). */
export const propagateStreamMessageSchema = {
  oneOf: [
    {
      type: 'object',
      description: 'One frame, in processing order.',
      required: ['type', 'frame_index', 'objects'],
      additionalProperties: false,
      properties: { type: { type: 'string', const: 'frame' }, ...frameResultProperties },
    },
    {
      type: 'object',
      description: 'The last message of a propagation that ran to its end.',
      required: ['type', 'total_frames'],
      additionalProperties: false,
      properties: {
        type: { type: 'string', const: 'complete' },
        total_frames: { type: 'integer', minimum: 0 },
      },
    },
    {
      type: 'object',
      description: 'The last message of a propagation that failed; the SPEC error body.',
      required: ['type', 'error'],
      additionalProperties: false,
      properties: {
        type: { type: 'string', const: 'error' },
        error: errorResponseSchema.properties.error,
      },
    },
  ],
} as const;

export const sessionStatusResponseSchema = {
  type: 'object',
  required: [
    'session_id',
    'status',
    'current_objects',
    'frames_processed',
    'total_frames',
    'gpu_memory_used_mb',
    'concepts',
  ],
  additionalProperties: false,
  properties: {
    session_id: { type: 'string' },
    concepts: {
      type: 'array',
      description: 'Text concepts being tracked, with their current objects (empty for clicks).',
      items: {
        type: 'object',
        required: ['concept_id', 'text', 'object_ids'],
        additionalProperties: false,
        properties: {
          concept_id: { type: 'integer', minimum: 1 },
          text: { type: 'string' },
          object_ids: { type: 'array', items: { type: 'integer', minimum: 1 } },
        },
      },
    },
    status: { type: 'string', enum: ['ready', 'propagating'] },
    current_objects: {
      type: 'array',
      description: 'Object ids, in creation order.',
      items: { type: 'integer', minimum: 1 },
    },
    frames_processed: {
      type: 'integer',
      minimum: 0,
      description: 'Distinct frames with results (prompted or propagated) since start or reset.',
    },
    total_frames: { type: 'integer', minimum: 1, description: 'Frames of the video.' },
    gpu_memory_used_mb: {
      type: 'number',
      minimum: 0,
      description:
        'MiB (2^20 bytes) the session holds: the exact bytes of its tracker tensors on its ' +
        'device (memories, object pointers, masks, cached frame features), plus the decoded ' +
        'frames of its frame window when the frame source measures them. What DELETE reports ' +
        'as memory_freed_mb.',
    },
  },
} as const;

export const removeObjectResponseSchema = {
  type: 'object',
  required: ['session_id', 'obj_id', 'status'],
  additionalProperties: false,
  properties: {
    session_id: { type: 'string' },
    obj_id: { type: 'integer', minimum: 1 },
    status: { type: 'string', const: 'removed' },
  },
} as const;

export const removeConceptResponseSchema = {
  type: 'object',
  required: ['session_id', 'concept_id', 'removed_objects', 'status'],
  additionalProperties: false,
  properties: {
    session_id: { type: 'string' },
    concept_id: { type: 'integer', minimum: 1 },
    removed_objects: {
      type: 'array',
      description: 'The ids of the objects the concept had, now gone.',
      items: { type: 'integer', minimum: 1 },
    },
    status: { type: 'string', const: 'removed' },
  },
} as const;

export const resetSessionResponseSchema = {
  type: 'object',
  required: ['session_id', 'status', 'objects_cleared'],
  additionalProperties: false,
  properties: {
    session_id: { type: 'string' },
    status: { type: 'string', const: 'reset' },
    objects_cleared: { type: 'integer', minimum: 0 },
  },
} as const;

export const closeSessionResponseSchema = {
  type: 'object',
  required: ['session_id', 'status', 'memory_freed_mb'],
  additionalProperties: false,
  properties: {
    session_id: { type: 'string' },
    status: { type: 'string', const: 'closed' },
    memory_freed_mb: {
      type: 'number',
      minimum: 0,
      description: 'MiB released, measured at the close (as gpu_memory_used_mb).',
    },
  },
} as const;

export const sessionsListResponseSchema = {
  type: 'object',
  required: ['sessions', 'total_sessions'],
  additionalProperties: false,
  properties: {
    sessions: {
      type: 'array',
      items: {
        type: 'object',
        required: ['session_id', 'type', 'created_at', 'status', 'objects_count'],
        additionalProperties: false,
        properties: {
          session_id: { type: 'string' },
          type: { type: 'string', const: 'video' },
          created_at: { type: 'string', description: 'ISO 8601 date-time (UTC).' },
          status: { type: 'string', enum: ['ready', 'propagating'] },
          objects_count: { type: 'integer', minimum: 0 },
        },
      },
    },
    total_sessions: { type: 'integer', minimum: 0 },
  },
} as const;
