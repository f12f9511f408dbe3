import { errorStatuses, type ErrorCode } from './api-types';

/**
 * Codes of failures the client reports itself (no {"error"} body from the server):
 * - connection_failed: the request or WebSocket never got an answer (network error, refused
 *   upgrade: 401, 429 or 503 before the 101, whose status is known only where the WebSocket
 *   implementation reports it, as `ws` does; a browser does not).
 * - connection_closed: the WebSocket closed before a "complete" or "error" message (server
 *   shutdown 1001, a terminated slow reader 1006, a protocol close such as 1009).
 * - http_error: a failure status without the API's error body (e.g. a proxy's HTML page).
 * - invalid_response: a success (or a stream message) that is not the API's JSON.
 */
export type ClientErrorCode =
  'connection_failed' | 'connection_closed' | 'http_error' | 'invalid_response';

/** The API's error codes, the client's own, and (from a newer server) any other string. */
export type Sam3ErrorCode = ErrorCode | ClientErrorCode | (string & Record<never, never>);

export interface Sam3ApiErrorInit {
  status: number;
  code: Sam3ErrorCode;
  message: string;
  requestId?: string | null;
  retryAfterSeconds?: number | null;
  /** WebSocket close code, where the error came with a close. */
  closeCode?: number | null;
  cause?: unknown;
}

/**
 * An error answer of the API ({"error": {"code", "message"}}), or a failure to reach it.
 * `status` is the HTTP status; for an {"type": "error"} WebSocket message, the status its code
 * has over HTTP; 0 where there is none (connection failures without a known status).
 */
export class Sam3ApiError extends Error {
  override readonly name = 'Sam3ApiError';
  readonly status: number;
  readonly code: Sam3ErrorCode;
  /** X-Request-Id of the response (the server logs the same id); null when there is none. */
  readonly requestId: string | null;
  /** Retry-After of a 429 or 503, seconds; null when absent. */
  readonly retryAfterSeconds: number | null;
  /** The WebSocket close code, for errors of propagateStream; else null. */
  readonly closeCode: number | null;

  constructor(init: Sam3ApiErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId ?? null;
    this.retryAfterSeconds = init.retryAfterSeconds ?? null;
    this.closeCode = init.closeCode ?? null;
  }
}

/** Whether `code` is one of the API's error codes (as the generated document lists them). */
export function isApiErrorCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(errorStatuses, code);
}

/** The HTTP status of an API error code; 0 for a code this client does not know. */
export function statusOfErrorCode(code: string): number {
  return isApiErrorCode(code) ? errorStatuses[code] : 0;
}

/** Reads {"error": {"code", "message"}} out of a parsed body; null when it is not one. */
export function errorBodyOf(body: unknown): { code: string; message: string } | null {
  if (typeof body !== 'object' || body === null) return null;
  const error = (body as { error?: unknown }).error;
  if (typeof error !== 'object' || error === null) return null;
  const { code, message } = error as { code?: unknown; message?: unknown };
  if (typeof code !== 'string') return null;
  return { code, message: typeof message === 'string' ? message : code };
}
