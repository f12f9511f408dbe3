/**
 * The one place that turns errors into responses (Express 5 forwards rejected handler
 * promises here), plus the 404 for unknown routes, and the same error shape for the answers
 * the HTTP server gives before a request reaches the app (http-server.ts).
 */
import { STATUS_CODES } from 'node:http';
import type { ErrorRequestHandler, RequestHandler } from 'express';
import { RequestCancelledError } from '../engine/admission';
import type { Logger } from '../logging';
import { ApiError, ERROR_STATUS, mapError, type ErrorCode } from './errors';
import { REQUEST_ID_HEADER } from './request-context';

/** Longest client path echoed in a 404 message. */
const MAX_ECHOED_PATH = 128;

/** Stands for a file path taken out of a logged message. */
const PATH_PLACEHOLDER = '<path>';

export const notFound: RequestHandler = (req) => {
  const path =
    req.path.length > MAX_ECHOED_PATH ? `${req.path.slice(0, MAX_ECHOED_PATH)}...` : req.path;
  throw new ApiError('not_found', `no route for ${req.method} ${path}`);
};

/**
 * File system errors name their file (`path`, `dest`) in the message and the stack; that may
 * be a client's video_path or upload, so it is taken out of what is logged.
 */
function withoutPaths(text: string | undefined, error: Error): string | undefined {
  if (text === undefined) return undefined;
  let clean = text;
  for (const key of ['path', 'dest']) {
    const value = (error as unknown as Record<string, unknown>)[key];
    if (typeof value === 'string' && value !== '')
      clean = clean.split(value).join(PATH_PLACEHOLDER);
  }
  return clean;
}

/** What is logged of an error; `stack` only for server faults (a refusal's stack is noise). */
function errorDetails(error: unknown, stack: boolean): Record<string, unknown> {
  if (!(error instanceof Error)) return { value: String(error) };
  const code = (error as { code?: unknown }).code;
  return {
    name: error.name,
    message: withoutPaths(error.message, error),
    ...(code === undefined ? {} : { code }),
    ...(stack ? { stack: withoutPaths(error.stack, error) } : {}),
    ...(error.cause === undefined ? {} : { cause: errorDetails(error.cause, stack) }),
  };
}

export function errorHandler(fallbackLogger: Logger): ErrorRequestHandler {
  return (error: unknown, req, res, _next) => {
    const logger = res.locals.logger ?? fallbackLogger;
    if (error instanceof RequestCancelledError) {
      // Nobody is left to answer; the access log records the request as 499.
      logger.debug(error.message);
      res.destroy();
      return;
    }
    const mapped = mapError(error);
    if (mapped.internal || mapped.status >= 500) {
      logger.log(mapped.internal ? 'error' : 'warn', `request failed: ${mapped.body.error.code}`, {
        error: errorDetails(error, mapped.internal),
      });
    } else {
      logger.debug(`request refused: ${mapped.body.error.code}`, {
        error: errorDetails(error, false),
      });
    }
    if (res.headersSent) {
      // Too late for an error body: cut the connection so the client sees a broken response.
      res.destroy();
      return;
    }
    // A body left unread (refused on its headers, e.g. a 413 on Content-Length) would otherwise
    // be read to its end to keep the connection alive, or be parsed as the next request.
    if (!req.complete) res.set('Connection', 'close');
    res.locals.errorCode = mapped.body.error.code;
    res.status(mapped.status).set(mapped.headers).json(mapped.body);
  };
}

export interface BareError {
  code: ErrorCode;
  message: string;
  headers?: Readonly<Record<string, string>>;
}

function bareBody(error: BareError): string {
  return JSON.stringify({ error: { code: error.code, message: error.message } });
}

/**
 * An error answered outside Express as raw bytes (no middleware ran): the error shape, a
 * fresh request id and Connection: close, for a socket whose request never parsed
 * ('clientError') or was never read (a connection refused on accept).
 */
export function bareErrorBytes(error: BareError, requestId: string): string {
  const body = bareBody(error);
  const status = ERROR_STATUS[error.code];
  const extra = Object.entries(error.headers ?? {})
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    `${REQUEST_ID_HEADER}: ${requestId}\r\n${extra}Connection: close\r\n\r\n${body}`
  );
}
