/**
 * Cross-origin access (CORS_ORIGINS_LIST) with the `cors` package.
 *
 * - An origin is allowed when it equals a listed origin exactly (a trailing slash on either
 *   side is ignored: "https://app.example/" lists "https://app.example"). Only an allowed
 *   origin is echoed in Access-Control-Allow-Origin; any other gets no CORS header at all.
 * - `Origin: null` (sandboxed frames, file: pages, some redirects) is never allowed by name,
 *   even if "null" is listed: any page can produce it.
 * - `"*"` in the list allows every origin: responses carry `Access-Control-Allow-Origin: *`
 *   (no credentials are involved; the API key is a header the caller sets).
 * - An empty list (the default) allows no cross-origin browser access.
 *
 * Preflights for allowed origins are answered here (204), before the rate limit and the API
 * key check: browsers never send the key on a preflight.
 */
import cors from 'cors';
import type { RequestHandler } from 'express';
import { API_KEY_HEADER } from './auth';
import { REQUEST_ID_HEADER } from './request-context';
import { VISUALIZATION_SKIPPED_HEADER } from './routes/image';

export const CORS_ALLOWED_METHODS = ['GET', 'POST', 'DELETE'];
export const CORS_ALLOWED_HEADERS = ['Content-Type', API_KEY_HEADER, REQUEST_ID_HEADER];
/** Response headers a browser script may read: request id, visualization, rate-limit state. */
export const CORS_EXPOSED_HEADERS = [
  REQUEST_ID_HEADER,
  VISUALIZATION_SKIPPED_HEADER,
  'Retry-After',
  'RateLimit',
  'RateLimit-Policy',
];
/** How long a browser may cache a preflight answer, seconds. */
const PREFLIGHT_MAX_AGE_SECONDS = 600;
const ANY_ORIGIN = '*';
const OPAQUE_ORIGIN = 'null';

function normalizeOrigin(origin: string): string {
  return origin.replace(/\/+$/, '');
}

export function corsPolicy(originsList: readonly string[]): RequestHandler {
  const common = {
    methods: CORS_ALLOWED_METHODS,
    allowedHeaders: CORS_ALLOWED_HEADERS,
    exposedHeaders: CORS_EXPOSED_HEADERS,
    maxAge: PREFLIGHT_MAX_AGE_SECONDS,
    credentials: false,
  };
  if (originsList.includes(ANY_ORIGIN)) return cors({ ...common, origin: ANY_ORIGIN });

  const allowed = new Set(
    originsList.map(normalizeOrigin).filter((origin) => origin !== OPAQUE_ORIGIN),
  );
  const policy = cors({
    ...common,
    origin: (origin, callback) => {
      callback(null, origin !== undefined && allowed.has(normalizeOrigin(origin)));
    },
  });
  return (req, res, next) => {
    // The answer depends on Origin for every request, also the ones refused (the cors package
    // adds Vary only when it allows), so shared caches keep per-origin copies.
    res.vary('Origin');
    policy(req, res, next);
  };
}
