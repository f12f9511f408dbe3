/**
 * Per-client request rate limit (RATE_LIMIT_ENABLED, RATE_LIMIT_REQUESTS_PER_MINUTE,
 * RATE_LIMIT_WINDOW_SECONDS) with express-rate-limit's in-process memory store: each server
 * process counts its own clients.
 *
 * A client is its API key when it presents a valid one (so clients behind one NAT or proxy keep
 * separate budgets), else its address: `req.ip`, which believes X-Forwarded-For only from the
 * TRUST_PROXY_HOPS proxies set as Express `trust proxy` in app.ts, so a client cannot rotate
 * that header to get a fresh budget. Invalid keys do not open a budget of their own.
 */
import type { RequestHandler } from 'express';
import { ipKeyGenerator, rateLimit } from 'express-rate-limit';
import type { Logger } from '../logging';
import { apiKeyDigest, presentedApiKey, type ApiKeyVerifier } from './auth';
import { ApiError } from './errors';

/** Paths never limited: orchestrators poll /health and must always get an answer. */
const UNLIMITED_PATHS: ReadonlySet<string> = new Set(['/health']);

export interface RateLimitOptions {
  /** Requests allowed per client per window. */
  limit: number;
  windowSeconds: number;
  verifyApiKey: ApiKeyVerifier;
  logger: Logger;
}

/**
 * The limiter. Allowed responses carry the draft-7 `RateLimit` and `RateLimit-Policy` headers;
 * a refused request gets `Retry-After` (seconds to the end of the client's window) and 429
 * rate_limited from the app's error handler.
 */
export function requestRateLimit(options: RateLimitOptions): RequestHandler {
  const { limit, windowSeconds, verifyApiKey, logger } = options;
  return rateLimit({
    windowMs: Math.round(windowSeconds * 1000),
    limit,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    skip: (request) => UNLIMITED_PATHS.has(request.path),
    keyGenerator: (request) => {
      const key = presentedApiKey(request.headers);
      if (key !== undefined && verifyApiKey(key)) {
        return `key:${apiKeyDigest(key).toString('hex')}`;
      }
      // req.ip is undefined only when the socket is already gone; such a request ends anyway.
      const address = request.ip ?? request.socket.remoteAddress ?? 'unknown';
      // IPv6 clients own whole /56 subnets: counting single addresses would let one rotate.
      return `ip:${ipKeyGenerator(address)}`;
    },
    handler: (_request, _response, next) => {
      next(
        new ApiError(
          'rate_limited',
          `too many requests: at most ${limit} per ${windowSeconds} s per client; retry after ` +
            'the time in the Retry-After header',
        ),
      );
    },
    // The library's own warnings (misconfiguration checks) go to the server log.
    logger: {
      warn: (error, message) =>
        logger.warn(message ?? 'express-rate-limit warning', { error: String(error) }),
      error: (error, message) =>
        logger.error(message ?? 'express-rate-limit error', { error: String(error) }),
    },
  });
}
