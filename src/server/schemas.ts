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
        items: {
          type: 'object',
          required: ['type'],
          properties: { type: { type: 'string', enum: ['text', 'box', 'point'] } },
          discriminator: { propertyName: 'type' },
          oneOf: [textPromptSchema, boxPromptSchema, pointPromptSchema],
        },
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
          role: { type: 'string', enum: ['image'] },
          status: { type: 'string', enum: ['loading', 'ready', 'failed', 'disabled', 'stopping'] },
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
