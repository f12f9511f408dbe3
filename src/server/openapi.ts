/**
 * The OpenAPI 3.1 document of the server, built from the same schema objects that validate
 * requests (src/server/schemas.ts), so the published contract cannot drift from the checks.
 */
import { ERROR_STATUS, RETRY_AFTER_SECONDS, type ErrorCode } from './errors';
import {
  MAX_POINTS,
  MAX_PROMPTS,
  MAX_TEXT_LENGTH,
  boxPromptSchema,
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
    { type: 'text', text: 'car' },
  ],
  confidence_threshold: 0.5,
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
          summary: 'Segment every instance of the prompted concepts in one image',
          description:
            `Each text prompt is one concept: every instance of it above the threshold is ` +
            `returned, with the prompt text as its label. Results of all prompts are ` +
            `concatenated in request order; the instances of one prompt are sorted by score. ` +
            `Limits: ${MAX_PROMPTS} prompts, ${MAX_TEXT_LENGTH} characters per text, ` +
            `${MAX_POINTS} points per point prompt. Box and point prompts and ` +
            `return_visualization are part of the schema but not served yet (400).`,
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
            '200': jsonResponse('The instances found.', 'SegmentResponse'),
            '400': errorResponse('Malformed or unsupported request.', [
              'invalid_request',
              'invalid_json',
              'invalid_base64',
              'unsupported_prompt',
              'unsupported_option',
            ]),
            '413': errorResponse('Body or image too large.', [
              'payload_too_large',
              'image_too_large',
            ]),
            '415': errorResponse('Not JSON, or an image format other than JPEG/PNG/WebP.', [
              'unsupported_media',
            ]),
            '422': errorResponse('The image cannot be decoded.', ['invalid_image']),
            '500': errorResponse('A server fault.', ['internal_error']),
            '503': {
              ...errorResponse(
                `Model not ready or device out of memory (Retry-After: ${RETRY_AFTER_SECONDS}).`,
                ['not_ready', 'device_out_of_memory'],
              ),
              headers: {
                'X-Request-Id': requestIdHeader,
                'Retry-After': { schema: { type: 'integer' } },
              },
            },
          },
        },
      },
    },
    components: {
      schemas: {
        SegmentRequest: options.segmentRequestSchema,
        TextPrompt: textPromptSchema,
        BoxPrompt: boxPromptSchema,
        PointPrompt: pointPromptSchema,
        SegmentResponse: segmentResponseSchema,
        Health: healthResponseSchema,
        ServerInfo: serverInfoSchema,
        Error: errorResponseSchema,
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
