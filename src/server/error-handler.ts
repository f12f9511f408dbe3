/**
 * The one place that turns errors into responses (Express 5 forwards rejected handler
 * promises here), plus the 404 for unknown routes.
 */
import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from '../logging';
import { ApiError, mapError } from './errors';

/** Longest client path echoed in a 404 message. */
const MAX_ECHOED_PATH = 128;

export const notFound: RequestHandler = (req) => {
  const path =
    req.path.length > MAX_ECHOED_PATH ? `${req.path.slice(0, MAX_ECHOED_PATH)}...` : req.path;
  throw new ApiError('not_found', `no route for ${req.method} ${path}`);
};

function errorDetails(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { value: String(error) };
  const code = (error as { code?: unknown }).code;
  return {
    name: error.name,
    message: error.message,
    ...(code === undefined ? {} : { code }),
    stack: error.stack,
    ...(error.cause === undefined ? {} : { cause: errorDetails(error.cause) }),
  };
}

export function errorHandler(fallbackLogger: Logger): ErrorRequestHandler {
  return (error: unknown, _req, res, _next) => {
    const logger = res.locals.logger ?? fallbackLogger;
    const mapped = mapError(error);
    if (mapped.internal || mapped.status >= 500) {
      logger.log(mapped.internal ? 'error' : 'warn', `request failed: ${mapped.body.error.code}`, {
        error: errorDetails(error),
      });
    } else {
      logger.debug(`request refused: ${mapped.body.error.code}`, { error: errorDetails(error) });
    }
    if (res.headersSent) {
      // Too late for an error body: cut the connection so the client sees a broken response.
      res.destroy();
      return;
    }
    res.status(mapped.status).set(mapped.headers).json(mapped.body);
  };
}
