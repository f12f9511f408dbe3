/**
 * The OpenAPI 3.1 document of the server, built from the same schema objects that validate
 * requests (src/server/schemas.ts), so the published contract cannot drift from the checks.
 */
import { ERROR_STATUS, RETRY_AFTER_SECONDS, type ErrorCode } from './errors';
import {
  MAX_BOX_PROMPTS,
  MAX_OBJECT_ID,
  SESSION_ID_PATTERN,
  MAX_CACHED_TEXT_PROMPTS,
  MAX_POINTS,
  MAX_PROMPTS,
  MAX_TEXT_LENGTH,
  MAX_OBJECT_CLICKS,
  boxPromptSchema,
  cachedFeaturesResponseSchema,
  closeSessionResponseSchema,
  errorResponseSchema,
  healthResponseSchema,
  pointPromptSchema,
  propagateResponseSchema,
  propagateStreamMessageSchema,
  removeObjectResponseSchema,
  removeConceptResponseSchema,
  resetSessionResponseSchema,
  segmentResponseSchema,
  serverInfoSchema,
  sessionStatusResponseSchema,
  sessionsListResponseSchema,
  startSessionFormSchema,
  startSessionResponseSchema,
  textPromptSchema,
  videoPromptRequestSchema,
  videoPromptResponseSchema,
  type JsonSchema,
} from './schemas';

export interface OpenApiOptions {
  version: string;
  /** The request schema as the server validates it (its limits come from the config). */
  segmentRequestSchema: JsonSchema;
  cachedFeaturesRequestSchema: JsonSchema;
  startSessionRequestSchema: JsonSchema;
  /** The HTTP propagate body (with `stream`). */
  propagateRequestSchema: JsonSchema;
  /** Configured limits the video descriptions state. */
  limits: {
    maxUploadSizeMb: number;
    wsMaxBufferedMb: number;
    maxConcurrentSessions: number;
    maxObjects: number;
    sessionTimeoutSeconds: number;
  };
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
      ...videoPaths(options),
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
        StartSessionRequest: options.startSessionRequestSchema,
        StartSessionForm: startSessionFormSchema,
        StartSessionResponse: startSessionResponseSchema,
        VideoPromptRequest: videoPromptRequestSchema,
        VideoPromptResponse: videoPromptResponseSchema,
        PropagateRequest: options.propagateRequestSchema,
        PropagateResponse: propagateResponseSchema,
        PropagateStreamMessage: propagateStreamMessageSchema,
        SessionStatus: sessionStatusResponseSchema,
        RemoveObjectResponse: removeObjectResponseSchema,
        RemoveConceptResponse: removeConceptResponseSchema,
        ResetSessionResponse: resetSessionResponseSchema,
        CloseSessionResponse: closeSessionResponseSchema,
        SessionList: sessionsListResponseSchema,
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

const sessionIdParameter = {
  name: 'session_id',
  in: 'path',
  required: true,
  description: 'The session id (as start returned it).',
  schema: { type: 'string', pattern: SESSION_ID_PATTERN },
};

/** The error responses every video route can give. */
function videoErrorResponses(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    '400': errorResponse('Malformed request.', ['invalid_request', 'invalid_json']),
    '401': errorResponse('Missing or wrong X-API-Key (when REQUIRE_API_KEY is on).', [
      'unauthorized',
    ]),
    '404': errorResponse('No such session (or object).', ['not_found']),
    '429': retryable('Too many requests from this client.', ['rate_limited']),
    '500': errorResponse('A server fault.', ['internal_error']),
    '503': retryable(
      'Video sessions disabled (VIDEO_MODEL_ENABLED=false), not available (the bundle has no ' +
        'tracker modules, or the video model failed to load), still loading, shutting down, or ' +
        'the device is out of memory.',
      ['video_disabled', 'not_ready', 'device_out_of_memory'],
    ),
    ...extra,
  };
}

const busyResponse = errorResponse(
  'The session runs another operation (one at a time: prompt, propagate, remove, reset).',
  ['session_busy'],
);

const propagateExample = { direction: 'forward', start_frame_index: 0, max_frames: 50 };

function videoPaths(options: OpenApiOptions): Record<string, unknown> {
  const { limits } = options;
  const json = (name: string, example?: unknown): Record<string, unknown> => ({
    required: true,
    content: {
      'application/json': {
        schema: { $ref: `#/components/schemas/${name}` },
        ...(example === undefined ? {} : { example }),
      },
    },
  });
  return {
    '/api/v1/video/session/start': {
      post: {
        operationId: 'startVideoSession',
        security: apiKeySecurity,
        summary: 'Open a video session',
        description:
          `JSON with exactly one of video_url, video_base64 and video_path, or ` +
          `multipart/form-data with the file in the "video" field (at most ` +
          `${limits.maxUploadSizeMb} MB). The video is probed (frames, size, duration limits ` +
          `checked before anything is decoded), frames are decoded on demand, and a tracker is ` +
          `created on the allowed device with the fewest sessions. At most ` +
          `${limits.maxConcurrentSessions} sessions at once (those starting count); a session ` +
          `idle for ${limits.sessionTimeoutSeconds} s is closed.`,
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: { $ref: '#/components/schemas/StartSessionRequest' },
              example: { video_path: '/tmp/sam3_uploads/clip.mp4', session_id: 'clip-1' },
            },
            'multipart/form-data': {
              schema: { $ref: '#/components/schemas/StartSessionForm' },
            },
          },
        },
        responses: {
          '200': jsonResponse('The session is ready.', 'StartSessionResponse'),
          ...videoErrorResponses({
            '400': errorResponse(
              'Malformed request, a device not used for video, or a refused URL.',
              [
                'invalid_request',
                'invalid_json',
                'invalid_base64',
                'invalid_device',
                'url_not_allowed',
                'unsupported_scheme',
              ],
            ),
            '403': errorResponse('video_path outside VIDEO_PATH_ROOTS.', ['path_not_allowed']),
            '409': errorResponse('session_id is taken.', ['session_exists']),
            '413': errorResponse('Video or body too large.', ['payload_too_large']),
            '415': errorResponse('Neither JSON nor multipart/form-data.', ['unsupported_media']),
            '422': errorResponse('The video cannot be used.', [
              'invalid_video',
              'no_decodable_frames',
              'video_limits_exceeded',
            ]),
            '429': retryable('Too many requests, or too many open sessions.', [
              'rate_limited',
              'too_many_sessions',
            ]),
            '502': errorResponse('The video URL could not be downloaded.', ['download_failed']),
            '504': errorResponse('The download took too long.', ['download_timeout']),
          }),
        },
      },
    },
    '/api/v1/video/session/{session_id}/prompt': {
      post: {
        operationId: 'promptVideoObject',
        security: apiKeySecurity,
        summary: 'Track a text concept, or add or refine one object with clicks and/or a box',
        description:
          'Text prompts (obj_id null, no clicks) start concept tracking: every instance of ' +
          'each text on this frame becomes an object, and later frames find new instances as ' +
          'they appear; the answer lists the objects shown on this frame. Box prompts with ' +
          'a text are its visual exemplars on this frame (a box belongs to the text before ' +
          'it); other frames detect the text alone. ' +
          `Point prompts (all their clicks, at most ${MAX_OBJECT_CLICKS}, are one object's ` +
          `clicks on this frame and replace its earlier clicks there) and at most one box, for ` +
          `the object obj_id (null: a new object; in a session tracking text concepts, obj_id ` +
          `names the object to refine). At most ${limits.maxObjects} objects per ` +
          `session. The answer holds every object of the session on that frame.`,
        parameters: [sessionIdParameter],
        requestBody: json('VideoPromptRequest', {
          frame_index: 0,
          prompts: [{ type: 'point', points: [[0.5, 0.5]], point_labels: [1] }],
          obj_id: null,
        }),
        responses: {
          '200': jsonResponse('Every object on the prompted frame.', 'VideoPromptResponse'),
          ...videoErrorResponses({
            '400': errorResponse(
              'Malformed request, frame out of range, or prompts with no single meaning (text ' +
                'with clicks or boxes, clicks for a new object in a session tracking text ' +
                'concepts, text in a session of clicked objects, or a bundle without concept ' +
                'tracking).',
              ['invalid_request', 'invalid_json', 'invalid_prompt'],
            ),
            '409': errorResponse('Busy, or too many objects.', [
              'session_busy',
              'too_many_objects',
            ]),
          }),
        },
      },
    },
    '/api/v1/video/session/{session_id}/propagate': {
      post: {
        operationId: 'propagateVideo',
        security: apiKeySecurity,
        summary: 'Track every object through the video',
        description:
          'One frame at a time, each once: forward from the start to the end, backward from ' +
          'the start down to frame 0, or both (forward from the start, then backward from ' +
          'start - 1); max_frames bounds the frames per direction. With stream: true the ' +
          'answer is application/x-ndjson, one PropagateStreamMessage per line (the messages ' +
          'of WS /ws/propagate/{session_id}), and a client that leaves more than ' +
          `${limits.wsMaxBufferedMb} MB unread is disconnected. A client that disconnects ` +
          'cancels the propagation before its next frame.',
        parameters: [sessionIdParameter],
        requestBody: json('PropagateRequest', propagateExample),
        responses: {
          '200': {
            description: 'The results, or (stream: true) the NDJSON stream.',
            headers: { 'X-Request-Id': requestIdHeader },
            content: {
              'application/json': { schema: { $ref: '#/components/schemas/PropagateResponse' } },
              'application/x-ndjson': {
                schema: { $ref: '#/components/schemas/PropagateStreamMessage' },
              },
            },
          },
          ...videoErrorResponses({
            '400': errorResponse('Malformed request, frame out of range, or no objects yet.', [
              'invalid_request',
              'invalid_json',
              'invalid_prompt',
            ]),
            '409': busyResponse,
          }),
        },
      },
    },
    '/ws/propagate/{session_id}': {
      get: {
        operationId: 'propagateVideoWebSocket',
        security: apiKeySecurity,
        summary: 'WebSocket: a propagation streamed frame by frame',
        description:
          'Upgrade with X-API-Key in a header (never the query string); a browser, which ' +
          'cannot set headers, offers the subprotocols "sam3.v1" and "sam3.key.<the key, ' +
          'base64url>" instead, and the server selects "sam3.v1". Refusals (401, 429, ' +
          '503) are HTTP answers before the 101. Then send one JSON text message like the ' +
          'propagate body without stream (PropagateRequest); the server sends one ' +
          'PropagateStreamMessage per frame in processing order, then "complete" (close ' +
          '1000), or "error" (close 1008 refused, 1013 busy or overloaded, 1011 fault). An ' +
          'unknown session gets an error message, then the close. Messages over 64 KiB close ' +
          'with 1009. Closing the socket cancels the propagation before its next frame; a ' +
          `client that leaves more than ${limits.wsMaxBufferedMb} MB unread is terminated. On ` +
          'shutdown sockets close with 1001.',
        parameters: [sessionIdParameter],
        responses: {
          '101': { description: 'Switching to the WebSocket protocol.' },
          '400': errorResponse('Not a WebSocket upgrade.', ['invalid_request']),
          '401': errorResponse('Missing or wrong X-API-Key.', ['unauthorized']),
          '429': retryable('Too many requests from this client.', ['rate_limited']),
          '503': retryable('Video sessions not available.', ['video_disabled', 'not_ready']),
        },
      },
    },
    '/api/v1/video/session/{session_id}/status': {
      get: {
        operationId: 'getVideoSession',
        security: apiKeySecurity,
        summary: 'State of a session',
        parameters: [sessionIdParameter],
        responses: {
          '200': jsonResponse('The session.', 'SessionStatus'),
          ...videoErrorResponses(),
        },
      },
    },
    '/api/v1/video/session/{session_id}/object/{obj_id}': {
      delete: {
        operationId: 'removeVideoObject',
        security: apiKeySecurity,
        summary: 'Stop tracking one object',
        parameters: [
          sessionIdParameter,
          {
            name: 'obj_id',
            in: 'path',
            required: true,
            schema: { type: 'integer', minimum: 1, maximum: MAX_OBJECT_ID },
          },
        ],
        responses: {
          '200': jsonResponse('The object is gone.', 'RemoveObjectResponse'),
          ...videoErrorResponses({ '409': busyResponse }),
        },
      },
    },
    '/api/v1/video/session/{session_id}/concept/{concept_id}': {
      delete: {
        operationId: 'removeVideoConcept',
        security: apiKeySecurity,
        summary: 'Stop tracking a text concept',
        description:
          'Its objects are removed and the detector no longer looks for it. (Removing one ' +
          'object of a concept lets the detector find that instance again later, as a new ' +
          'object; removing the concept stops that.)',
        parameters: [
          sessionIdParameter,
          {
            name: 'concept_id',
            in: 'path',
            required: true,
            schema: { type: 'integer', minimum: 1, maximum: MAX_OBJECT_ID },
          },
        ],
        responses: {
          '200': jsonResponse('The concept and its objects are gone.', 'RemoveConceptResponse'),
          ...videoErrorResponses({ '409': busyResponse }),
        },
      },
    },
    '/api/v1/video/session/{session_id}/reset': {
      post: {
        operationId: 'resetVideoSession',
        security: apiKeySecurity,
        summary: 'Clear every object of a session (the video stays)',
        parameters: [sessionIdParameter],
        responses: {
          '200': jsonResponse('The objects are cleared.', 'ResetSessionResponse'),
          ...videoErrorResponses({ '409': busyResponse }),
        },
      },
    },
    '/api/v1/video/session/{session_id}': {
      delete: {
        operationId: 'closeVideoSession',
        security: apiKeySecurity,
        summary: 'Close a session and free its memory and files',
        description: 'A running propagation is cancelled first. Later calls answer 404.',
        parameters: [sessionIdParameter],
        responses: {
          '200': jsonResponse('Closed.', 'CloseSessionResponse'),
          ...videoErrorResponses(),
        },
      },
    },
    '/api/v1/video/sessions': {
      get: {
        operationId: 'listVideoSessions',
        security: apiKeySecurity,
        summary: 'Open video sessions',
        responses: {
          '200': jsonResponse('The open sessions.', 'SessionList'),
          ...videoErrorResponses(),
        },
      },
    },
  };
}
