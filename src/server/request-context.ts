/**
 * Per-request context: the request id (echoed in `X-Request-Id` on every response and carried
 * by the request's child logger) and one access-log line when the response is done: method,
 * path (never the query string, where clients put keys), matched route, status and latency.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Request, RequestHandler, Response } from 'express';
import type { Logger } from '../logging';

declare global {
  // Express's per-response locals, typed for this server (augments @types/express).
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Locals {
      requestId: string;
      /** Child logger carrying requestId. */
      logger: Logger;
      /** Aborts when the client goes away before the response is finished. */
      signal: AbortSignal;
      /** The error code answered, when the error handler answered (metrics). */
      errorCode?: string;
      /** The route pattern of a request refused before routing (see routeLabel). */
      route?: string;
    }
  }
}

export const REQUEST_ID_HEADER = 'X-Request-Id';
/** Client-supplied ids are kept only when short and made of safe characters (log injection). */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** Longest path written to the access log (paths are client-controlled). */
const MAX_LOGGED_PATH = 256;

/** A fresh request id (also for the answers the HTTP server gives outside the app). */
export function newRequestId(): string {
  return randomUUID();
}

export function requestContext(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const supplied = req.get(REQUEST_ID_HEADER);
    const requestId =
      supplied !== undefined && CLIENT_REQUEST_ID.test(supplied) ? supplied : newRequestId();
    res.locals.requestId = requestId;
    res.locals.logger = logger.child({ requestId });
    // 'close' before the response finished: the client hung up, and its work is dropped.
    const cancel = new AbortController();
    res.locals.signal = cancel.signal;
    res.once('close', () => {
      if (!res.writableFinished) cancel.abort();
    });
    res.setHeader(REQUEST_ID_HEADER, requestId);
    next();
  };
}

/**
 * The route pattern (e.g. /api/v1/video/session/:id) that groups a request in logs and
 * metrics: the matched route's, or the one a middleware refusing it before routing named in
 * `res.locals.route`; null when none matched.
 */
export function routeLabel(req: Request, res: Response): string | null {
  if (typeof req.route?.path === 'string') return req.route.path;
  return res.locals.route ?? null;
}

/** Logs each request once, when its response finished or its connection closed early. */
export function accessLog(): RequestHandler {
  return (req, res, next) => {
    const started = performance.now();
    let logged = false;
    const log = (): void => {
      if (logged) return;
      logged = true;
      const ms = Math.round((performance.now() - started) * 10) / 10;
      const path = req.originalUrl.split('?')[0].slice(0, MAX_LOGGED_PATH);
      const status = res.writableFinished ? res.statusCode : 499;
      const level = status >= 500 ? 'warn' : 'info';
      const route = routeLabel(req, res);
      res.locals.logger.log(level, `${req.method} ${path} ${status} ${ms}ms`, {
        method: req.method,
        path,
        route,
        status,
        ms,
      });
    };
    res.on('finish', log);
    res.on('close', log);
    next();
  };
}
