/**
 * Error codes of the API, each with its HTTP status, and the one mapping from any thrown
 * value to the response `{"error": {"code", "message"}}`.
 *
 * Only errors the server raises on purpose (ApiError, ImageDecodeError, body-parser's client
 * errors, NativeError codes that describe the client's input) show their message; anything
 * else answers a generic 500 and is logged in full on the server side.
 */
import { OverloadedError } from '../engine/admission';
import { ImageDecodeError } from '../engine/image-decoder';
import { PromptPlanError } from '../engine/prompt-plan';
import { VideoInputError } from '../engine/video/errors';
import { VideoSessionError } from '../engine/video/session-errors';

export const ERROR_STATUS = {
  invalid_request: 400,
  invalid_json: 400,
  invalid_base64: 400,
  invalid_prompt: 400,
  invalid_device: 400,
  url_not_allowed: 400,
  unsupported_scheme: 400,
  unauthorized: 401,
  path_not_allowed: 403,
  not_found: 404,
  request_timeout: 408,
  session_exists: 409,
  session_busy: 409,
  too_many_objects: 409,
  payload_too_large: 413,
  image_too_large: 413,
  unsupported_media: 415,
  invalid_image: 422,
  invalid_video: 422,
  no_decodable_frames: 422,
  video_limits_exceeded: 422,
  rate_limited: 429,
  overloaded: 429,
  too_many_sessions: 429,
  headers_too_large: 431,
  internal_error: 500,
  download_failed: 502,
  not_ready: 503,
  device_out_of_memory: 503,
  video_disabled: 503,
  download_timeout: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** Seconds a client should wait before retrying a 503 not_ready / device_out_of_memory. */
export const RETRY_AFTER_SECONDS = 5;

/** An error meant for the client: its message is shown as is. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Extra response headers, e.g. Retry-After. */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.status = ERROR_STATUS[code];
  }
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

export interface MappedError {
  status: number;
  body: ErrorBody;
  headers: Readonly<Record<string, string>>;
  /** True when the error is a server fault (logged at error level with its stack). */
  internal: boolean;
}

const GENERIC_INTERNAL_MESSAGE = 'internal server error';

/** NativeError codes (src/native/types.ts NativeErrorCode) the client can act on. */
const NATIVE_CODE_MAP: Readonly<Record<string, { code: ErrorCode; message: string }>> = {
  BAD_INPUT: { code: 'invalid_request', message: 'the model refused the input' },
  DEVICE_OOM: {
    code: 'device_out_of_memory',
    message: 'the device ran out of memory; retry later or send a smaller request',
  },
  ENGINE_CLOSED: { code: 'not_ready', message: 'the model is not available' },
  MODEL_LOAD: { code: 'not_ready', message: 'the model is not loaded' },
  // A tracker call that lost the race with its session's close.
  SESSION_CLOSED: { code: 'not_found', message: 'the video session was closed' },
};

/**
 * zlib's and brotli's stream error codes: body-parser hands a corrupt compressed body's error
 * on without a `type` (Z_DATA_ERROR, Z_BUF_ERROR, ERR__ERROR_FORMAT_PADDING_1, ...).
 */
const DECOMPRESSION_ERROR_CODE = /^(Z_[A-Z_]+|ERR__ERROR_[A-Z0-9_]+|ERR_BROTLI_[A-Z0-9_]+)$/;

/** body-parser / http-errors client errors, by their `type`. */
const BODY_PARSER_TYPE_MAP: Readonly<Record<string, { code: ErrorCode; message: string }>> = {
  'entity.too.large': { code: 'payload_too_large', message: 'request body is too large' },
  'entity.parse.failed': { code: 'invalid_json', message: 'request body is not valid JSON' },
  'entity.verify.failed': { code: 'invalid_request', message: 'request body was refused' },
  'encoding.unsupported': {
    code: 'unsupported_media',
    message: 'unsupported Content-Encoding (send identity, gzip, deflate or br)',
  },
  'charset.unsupported': { code: 'unsupported_media', message: 'JSON must be UTF-8' },
  'request.aborted': { code: 'invalid_request', message: 'request body was aborted' },
  'request.size.invalid': {
    code: 'invalid_request',
    message: 'request body size does not match Content-Length',
  },
  'parameters.too.many': { code: 'payload_too_large', message: 'too many parameters' },
};

function make(
  code: ErrorCode,
  message: string,
  headers: Readonly<Record<string, string>> = {},
  internal = false,
): MappedError {
  return { status: ERROR_STATUS[code], body: { error: { code, message } }, headers, internal };
}

function retryHeaders(code: ErrorCode): Readonly<Record<string, string>> {
  return ERROR_STATUS[code] === 503 ? { 'Retry-After': String(RETRY_AFTER_SECONDS) } : {};
}

function stringField(value: unknown, key: string): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const field = (value as Record<string, unknown>)[key];
  return typeof field === 'string' ? field : undefined;
}

/** Any thrown value -> status, body and headers. Never exposes stacks, paths or addresses. */
export function mapError(error: unknown): MappedError {
  if (error instanceof ApiError) return make(error.code, error.message, error.headers);
  if (error instanceof OverloadedError) {
    return make('overloaded', error.message, { 'Retry-After': String(error.retryAfterSeconds) });
  }
  if (error instanceof ImageDecodeError) return make(error.code, error.message);
  if (error instanceof PromptPlanError) return make(error.code, error.message);
  if (error instanceof VideoInputError) return make(error.code, error.message);
  if (error instanceof VideoSessionError) {
    const retry = error.retryAfterSeconds;
    return make(
      error.code,
      error.message,
      retry === undefined ? retryHeaders(error.code) : { 'Retry-After': String(retry) },
    );
  }
  // A malformed percent-escape in a URL path (Express throws it while matching :params).
  if (error instanceof URIError) return make('invalid_request', 'malformed URL path');

  const bodyParserType = stringField(error, 'type');
  const bodyParserError =
    bodyParserType === undefined ? undefined : BODY_PARSER_TYPE_MAP[bodyParserType];
  if (bodyParserError !== undefined) return make(bodyParserError.code, bodyParserError.message);
  const zlibCode = stringField(error, 'code');
  if (
    zlibCode !== undefined &&
    DECOMPRESSION_ERROR_CODE.test(zlibCode) &&
    (error as { status?: unknown }).status === 400
  ) {
    return make(
      'invalid_request',
      'the request body could not be decompressed (corrupt or truncated Content-Encoding data)',
    );
  }

  // NativeError (thrown by the addon) is recognised by its code, whatever its class.
  const nativeCode = stringField(error, 'code');
  const nativeError = nativeCode === undefined ? undefined : NATIVE_CODE_MAP[nativeCode];
  if (nativeError !== undefined && error instanceof Error) {
    return make(nativeError.code, nativeError.message, retryHeaders(nativeError.code));
  }
  return make('internal_error', GENERIC_INTERNAL_MESSAGE, {}, true);
}
