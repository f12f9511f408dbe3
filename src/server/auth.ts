/**
 * API-key authentication (REQUIRE_API_KEY / API_KEYS): the `X-API-Key` header, compared in
 * constant time. The check is plain functions over headers and a URL so that the HTTP
 * middleware here and the WebSocket upgrade handler (which must refuse before 101) share it.
 *
 * Keys are secrets: they are never logged, never echoed, and never accepted from the query
 * string (URLs end up in proxy logs, browser history and Referer headers).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { RequestHandler } from 'express';
import { ApiError } from './errors';
import { DEMO_PATHS } from './routes/demo';
import { DOCS_ASSET_PATHS } from './routes/docs';

export const API_KEY_HEADER = 'X-API-Key';
/** Sent with every 401 (RFC 9110 requires a challenge); the scheme names the header to use. */
export const WWW_AUTHENTICATE = 'ApiKey';

/** Query parameters clients commonly put keys in; their presence is answered with a hint. */
const QUERY_KEY_PARAMETERS = new Set(['api_key', 'apikey', 'api-key', 'key', 'x-api-key']);

/**
 * Routes that answer without a key: discovery and liveness. Method and exact path; anything
 * else (including case or trailing-slash variants the router would also match) needs a key,
 * so a mismatch fails closed.
 */
const OPEN_ROUTES: ReadonlySet<string> = new Set([
  'GET /',
  'GET /health',
  'GET /docs',
  ...DOCS_ASSET_PATHS.map((path) => `GET ${path}`),
  ...DEMO_PATHS.map((path) => `GET ${path}`),
  'GET /openapi.json',
]);

/** True when `presented` equals one of the configured keys. */
export type ApiKeyVerifier = (presented: string | undefined) => boolean;

/** SHA-256 of a key; also the rate limiter's client id for a valid key (never the key itself). */
export function apiKeyDigest(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}

/**
 * Builds a verifier over `keys`. Both sides are hashed first, so every comparison is of two
 * 32-byte digests: timingSafeEqual never sees different lengths and the time taken does not
 * depend on the presented key's length or on how many leading bytes match. Every configured
 * key is compared (no early exit), so the time does not reveal which key matched either.
 */
export function createApiKeyVerifier(keys: readonly string[]): ApiKeyVerifier {
  const digests = keys.map(apiKeyDigest);
  return (presented) => {
    if (presented === undefined || presented === '') return false;
    const candidate = apiKeyDigest(presented);
    let matched = false;
    for (const digest of digests) {
      // Non-short-circuiting OR: the comparison runs for every key.
      matched = timingSafeEqual(candidate, digest) || matched;
    }
    return matched;
  };
}

/**
 * The WebSocket subprotocol a browser offers to name its API key: a browser's WebSocket
 * cannot set headers, but it can offer subprotocols, which travel in the
 * `Sec-WebSocket-Protocol` header (not the URL, so no log or history records them). The key
 * is base64url-encoded (a subprotocol must be an HTTP token): `sam3.key.<base64url(key)>`,
 * offered together with WS_PROTOCOL, the one the server selects (the key is never echoed).
 */
export const WS_KEY_PROTOCOL_PREFIX = 'sam3.key.';
/** The subprotocol the server selects for its WebSocket (SPEC.md protocol, version 1). */
export const WS_PROTOCOL = 'sam3.v1';

/** The key named by a `sam3.key.` subprotocol of a WebSocket upgrade, or undefined. */
function webSocketProtocolKey(headers: IncomingHttpHeaders): string | undefined {
  if (headers.upgrade?.toLowerCase() !== 'websocket') return undefined;
  const offered = headers['sec-websocket-protocol'];
  if (offered === undefined) return undefined;
  for (const protocol of offered.split(',').map((p) => p.trim())) {
    if (!protocol.startsWith(WS_KEY_PROTOCOL_PREFIX)) continue;
    const encoded = protocol.slice(WS_KEY_PROTOCOL_PREFIX.length);
    const key = Buffer.from(encoded, 'base64url');
    // Only the canonical encoding counts (Node's decoder skips what it does not know).
    return key.toString('base64url') === encoded ? key.toString('utf8') : '';
  }
  return undefined;
}

/**
 * The presented API key: the X-API-Key header (a repeated header is a wrong key), or on a
 * WebSocket upgrade without it a `sam3.key.` subprotocol; undefined when there is none.
 */
export function presentedApiKey(headers: IncomingHttpHeaders): string | undefined {
  const value = headers[API_KEY_HEADER.toLowerCase()];
  if (value === undefined) return webSocketProtocolKey(headers);
  return Array.isArray(value) ? value.join(', ') : value;
}

/** True when the request URL carries a query parameter that looks like an API key. */
export function hasQueryStringKey(url: string): boolean {
  const queryStart = url.indexOf('?');
  if (queryStart < 0) return false;
  const query = new URLSearchParams(url.slice(queryStart + 1));
  for (const name of query.keys()) {
    if (QUERY_KEY_PARAMETERS.has(name.toLowerCase())) return true;
  }
  return false;
}

export type ApiKeyCheck = { ok: true } | { ok: false; message: string };

/**
 * Decides one request (HTTP or WebSocket upgrade) from its headers and URL. A key in the
 * query string never authenticates; when it is the only key offered, the message says where
 * the key belongs. Messages never contain the key.
 */
export function checkApiKey(
  verify: ApiKeyVerifier,
  headers: IncomingHttpHeaders,
  url: string,
): ApiKeyCheck {
  const presented = presentedApiKey(headers);
  if (verify(presented)) return { ok: true };
  if (presented === undefined && hasQueryStringKey(url)) {
    return {
      ok: false,
      message: `API keys are not accepted in the query string; send the key in the ${API_KEY_HEADER} header`,
    };
  }
  if (presented === undefined) {
    return { ok: false, message: `missing API key; send it in the ${API_KEY_HEADER} header` };
  }
  return { ok: false, message: 'invalid API key' };
}

/** True for the routes that answer without a key (HEAD counts as GET, as Express routes it). */
export function isOpenRoute(method: string, path: string): boolean {
  const routeMethod = method === 'HEAD' ? 'GET' : method;
  return OPEN_ROUTES.has(`${routeMethod} ${path}`);
}

/** The 401 every refusal answers with, as an ApiError for the app's error handler. */
export function unauthorizedError(message: string): ApiError {
  return new ApiError('unauthorized', message, { 'WWW-Authenticate': WWW_AUTHENTICATE });
}

/**
 * Express middleware: with `requireApiKey`, every route but the open ones needs a valid
 * X-API-Key; refusals go to the error handler as 401 unauthorized. Without it, a no-op.
 */
export function apiKeyAuth(options: {
  requireApiKey: boolean;
  verify: ApiKeyVerifier;
}): RequestHandler {
  const { requireApiKey, verify } = options;
  return (req, _res, next) => {
    if (!requireApiKey || isOpenRoute(req.method, req.path)) {
      next();
      return;
    }
    const check = checkApiKey(verify, req.headers, req.originalUrl);
    if (!check.ok) throw unauthorizedError(check.message);
    next();
  };
}
