/**
 * The OpenAPI 3.1 document of the server, built from the same schema objects that validate
 * requests (src/server/schemas.ts), so the published contract cannot drift from the checks.
 */
import { ERROR_STATUS, RETRY_AFTER_SECONDS, type ErrorCode } from './errors';
import {
  MAX_BOX_PROMPTS,
  MAX_CACHED_TEXT_PROMPTS,
  MAX_POINTS,
  MAX_PROMPTS,
  MAX_TEXT_LENGTH,
  boxPromptSchema,
  cachedFeaturesResponseSchema,
  errorResponseSchema,
  healthResponseSchema,
  pointPromptSchema,
  segmentResponseSchema,
  serverInfoSchema,
  textPromptSchema,
  type JsonSchema,
} from './schemas';

export interface OpenApiOptions {
  version: string;
  /** The request schema as the server validates it (its limits come from the config). */
  segmentRequestSchema: JsonSchema;
  cachedFeaturesRequestSchema: JsonSchema;
}

export type OpenApiDocument = Readonly<Record<string, unknown>>;

const errorRef = { $ref: '#/components/schemas/Error' };
const requestIdHeader = { $ref: '#/components/headers/X-Request-Id' };

function errorResponse(description: string, codes: readonly ErrorCode[]): Record<string, unknown> {
  return {
    description: `${description} Codes: ${codes.join(', ')}.`,
    headers: { 'X-Request-Id': requestIdHeader },
    content: { 'application/json': { schema: errorRef } },
  };
}

function jsonResponse(description: string, schemaName: string): Record<string, unknown> {
  return {
    description,
    headers: { 'X-Request-Id': requestIdHeader },
    content: { 'application/json': { schema: { $ref: `#/components/schemas/${schemaName}` } } },
  };
}

const segmentExample = {
  image: 'data:image/png;base64,iVBORw0KGgo...',
  prompts: [
    { type: 'text', text: 'person' },
    { type: 'box', box: [0.25, 0.25, 0.2, 0.4], label: true },
    { type: 'text', text: 'car' },
  ],
  confidence_threshold: 0.5,
};

const cachedFeaturesExample = {
  image: 'data:image/png;base64,iVBORw0KGgo...',
  text_prompts: ['person', 'car', 'tree'],
  confidence_threshold: 0.5,
};

function retryable(description: string, codes: readonly ErrorCode[]): Record<string, unknown> {
  return {
    ...errorResponse(description, codes),
    headers: {
      'X-Request-Id': requestIdHeader,
      'Retry-After': { schema: { type: 'integer' } },
    },
  };
}

/** The error responses every model route can give. */
function modelErrorResponses(): Record<string, unknown> {
  return {
    '400': errorResponse('Malformed or ambiguous request.', [
      'invalid_request',
      'invalid_json',
      'invalid_base64',
      'invalid_prompt',
    ]),
    '401': errorResponse('Missing or wrong X-API-Key (when REQUIRE_API_KEY is on).', [
      'unauthorized',
    ]),
    '413': errorResponse('Body or image too large.', ['payload_too_large', 'image_too_large']),
    '415': errorResponse('Not JSON, or an image format other than JPEG/PNG/WebP.', [
      'unsupported_media',
    ]),
    '422': errorResponse('The image cannot be decoded.', ['invalid_image']),
    '429': retryable('Too many requests from this client.', ['rate_limited']),
    '500': errorResponse('A server fault.', ['internal_error']),
    '503': retryable(
      `Model not ready or device out of memory (Retry-After: ${RETRY_AFTER_SECONDS}).`,
      ['not_ready', 'device_out_of_memory'],
    ),
  };
}

/** The API key is required only when the server runs with REQUIRE_API_KEY. */
const apiKeySecurity = [{ ApiKey: [] }, {}];

const serverTimingHeader = {
  description:
    'Wall time of each stage of this request, milliseconds (decode, hash, image_features, ' +
    'text_features, detect, points, visualization).',
  schema: { type: 'string' },
};

export function buildOpenApiDocument(options: OpenApiOptions): OpenApiDocument {
  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'SAM3 inference server',
      version: options.version,
      description:
        'Segment Anything 3 over HTTP. Coordinates are normalized to [0, 1] of the original ' +
        'image; boxes are [cx, cy, w, h]; masks are COCO RLE (pycocotools) at the original ' +
        'resolution; scores are probabilities. Every error is ' +
        '{"error": {"code", "message"}} and every response carries X-Request-Id.',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    paths: {
      '/': {
        get: {
          operationId: 'getServerInfo',
          summary: 'Server name, version and model',
          description:
            'Name and version of the server, the model id and bundle version, whether the ' +
            'bundle has random weights (with a warning when it does), and links to the docs.',
          responses: { '200': jsonResponse('Server information.', 'ServerInfo') },
        },
      },
      '/health': {
        get: {
          operationId: 'getHealth',
          summary: 'Readiness of the server and its devices',
          responses: {
            '200': jsonResponse('Serving (status "ok").', 'Health'),
            '503': {
              ...jsonResponse(
                'Loading, failed or shutting down (status "loading" or "degraded").',
                'Health',
              ),
              headers: {
                'X-Request-Id': requestIdHeader,
                'Retry-After': { schema: { type: 'integer' } },
              },
            },
          },
        },
      },
      '/openapi.json': {
        get: {
          operationId: 'getOpenApi',
          summary: 'This document',
          responses: {
            '200': {
              description: 'The OpenAPI 3.1 document.',
              content: { 'application/json': { schema: { type: 'object' } } },
            },
          },
        },
      },
      '/docs': {
        get: {
          operationId: 'getDocs',
          summary: 'Human-readable API documentation',
          responses: {
            '200': {
              description: 'An HTML page rendered from this document.',
              content: { 'text/html': { schema: { type: 'string' } } },
            },
          },
        },
      },
      '/api/v1/image/segment': {
        post: {
          operationId: 'segmentImage',
          security: apiKeySecurity,
          summary: 'Segment an image from text, box and point prompts',
          description:
            `Text prompts are concepts: every instance above the threshold is returned, ` +
            `labelled with the text. Box prompts are visual exemplars (positive or negative) ` +
            `of the text prompt before them; boxes without text are one "visual" concept ` +
            `(label "box"). Point prompts select one object together (label "point", score = ` +
            `predicted IoU), with at most one box as its region hint when there is no text. ` +
            `Results are concatenated in request order; the instances of a concept are sorted ` +
            `by score. Image features are cached by content and shared with ` +
            `/api/v1/image/cached-features. Limits: ${MAX_PROMPTS} prompts, ` +
            `${MAX_BOX_PROMPTS} boxes, ${MAX_TEXT_LENGTH} characters per text, ${MAX_POINTS} ` +
            `points per point prompt.`,
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: { $ref: '#/components/schemas/SegmentRequest' },
                example: segmentExample,
              },
            },
          },
          responses: {
            '200': {
              ...jsonResponse('The instances found.', 'SegmentResponse'),
              headers: { 'X-Request-Id': requestIdHeader, 'Server-Timing': serverTimingHeader },
            },
            ...modelErrorResponses(),
          },
        },
      },
      '/api/v1/image/cached-features': {
        post: {
          operationId: 'segmentImageCached',
          security: apiKeySecurity,
          summary: 'Many text prompts on one image, its features computed once',
          description:
            `The image features come from the cache when this image (by the content of its ` +
            `decoded pixels) was seen before by this model, else they are computed and cached; ` +
            `all prompts then go through the detector together. Up to ` +
            `${MAX_CACHED_TEXT_PROMPTS} prompts.`,
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: { $ref: '#/components/schemas/CachedFeaturesRequest' },
                example: cachedFeaturesExample,
              },
            },
          },
          responses: {
            '200': {
              ...jsonResponse('The instances of each prompt.', 'CachedFeaturesResponse'),
              headers: { 'X-Request-Id': requestIdHeader, 'Server-Timing': serverTimingHeader },
            },
            ...modelErrorResponses(),
          },
        },
      },
      '/api/v1/visualizations/{name}': {
        get: {
          operationId: 'getVisualization',
          security: apiKeySecurity,
          summary: 'A PNG written for return_visualization',
          parameters: [
            {
              name: 'name',
              in: 'path',
              required: true,
              schema: { type: 'string', pattern: '^[0-9a-f]{32}\\.png$' },
            },
          ],
          responses: {
            '200': {
              description: 'The image with masks, boxes and labels drawn on it.',
              content: { 'image/png': { schema: { type: 'string', format: 'binary' } } },
            },
            '401': errorResponse('Missing or wrong X-API-Key.', ['unauthorized']),
            '404': errorResponse('No such file (or it expired).', ['not_found']),
          },
        },
      },
    },
    components: {
      schemas: {
        SegmentRequest: options.segmentRequestSchema,
        CachedFeaturesRequest: options.cachedFeaturesRequestSchema,
        CachedFeaturesResponse: cachedFeaturesResponseSchema,
        TextPrompt: textPromptSchema,
        BoxPrompt: boxPromptSchema,
        PointPrompt: pointPromptSchema,
        SegmentResponse: segmentResponseSchema,
        Health: healthResponseSchema,
        ServerInfo: serverInfoSchema,
        Error: errorResponseSchema,
      },
      securitySchemes: {
        ApiKey: {
          type: 'apiKey',
          in: 'header',
          name: 'X-API-Key',
          description: 'Required on the /api routes when the server runs with REQUIRE_API_KEY.',
        },
      },
      headers: {
        'X-Request-Id': {
          description:
            'The request id: the client-supplied one when it matches [A-Za-z0-9._-]{1,64}, ' +
            'else a generated UUID. Server logs carry the same id.',
          schema: { type: 'string' },
        },
      },
    },
    'x-error-codes': Object.fromEntries(Object.entries(ERROR_STATUS)),
  };
}
