/**
 * The Node HTTP server around the Express app: timeouts and a header size limit (slowloris
 * and idle-socket protection), caps on open connections in all and per client address,
 * `Expect: 100-continue` left to the app (body-limits.ts decides before the body is sent),
 * Node-level refusals (malformed request, timeout, headers too large) answered in the API's
 * error shape with a request id, WebSocket upgrades routed through the app (ws.ts),
 * listening, and graceful shutdown.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import ipaddr from 'ipaddr.js';
import type { Config } from '../config';
import type { Logger } from '../logging';
import { markAwaitingContinue } from './body-limits';
import { bareErrorBytes, type BareError } from './error-handler';
import { ERROR_STATUS, RETRY_AFTER_SECONDS, type ErrorCode } from './errors';
import { newRequestId } from './request-context';
import { attachUpgrades } from './ws';

/** Longest wait for a request's headers (bounded by the whole-request timeout). */
export const HEADERS_TIMEOUT_MS = 60_000;
/** Idle keep-alive sockets are closed after this (Node's default, stated so it is a choice). */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** Largest request line plus headers, bytes (Node's default, stated): beyond it, 431. */
export const MAX_HEADER_BYTES = 16 * 1024;
/**
 * How often Node looks for requests past their header or request timeout (its default, 30 s,
 * would let a timed-out request linger that much longer).
 */
export const TIMEOUT_CHECK_INTERVAL_MS = 1_000;
/** Connections dropped over MAX_CONNECTIONS are logged as one line per this interval. */
const DROP_LOG_INTERVAL_MS = 10_000;

/** How often a closing server looks for keep-alive sockets that became idle. */
const IDLE_SWEEP_MS = 100;

/** Node's parser codes (llhttp, http server) -> the API's answer. */
function clientErrorAnswer(error: NodeJS.ErrnoException, requestTimeoutMs: number): BareError {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return {
        code: 'headers_too_large',
        message: `the request line and headers are larger than ${MAX_HEADER_BYTES} bytes`,
      };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return {
        code: 'request_timeout',
        message:
          `the request did not arrive in time (headers within ` +
          `${Math.min(HEADERS_TIMEOUT_MS, requestTimeoutMs) / 1000} s, the whole request within ` +
          `${requestTimeoutMs / 1000} s: REQUEST_TIMEOUT_SECONDS)`,
      };
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return { code: 'payload_too_large', message: 'chunk extensions are too large' };
    default: {
      // llhttp's reasons are its own fixed phrases ("Invalid method encountered"), never the
      // client's bytes; anything else is left out.
      const reason = (error as { reason?: unknown }).reason;
      const said = typeof reason === 'string' && /^[\w .,'-]{1,100}$/.test(reason);
      return {
        code: 'invalid_request',
        message: said ? `malformed HTTP request: ${reason}` : 'malformed HTTP request',
      };
    }
  }
}

/**
 * The per-address key: an IPv4 address (also when IPv4-mapped), or an IPv6 address's /64 (one
 * host usually holds a whole /64, so single IPv6 addresses would be free to rotate).
 */
function addressKey(remote: string): string {
  if (!ipaddr.isValid(remote)) return remote;
  const address = ipaddr.process(remote);
  if (address.kind() === 'ipv4') return address.toString();
  const parts = (address as ipaddr.IPv6).parts.slice(0, 4).map((part) => part.toString(16));
  return `${parts.join(':')}::/64`;
}

/**
 * MAX_CONNECTIONS: Node's own cap (sockets beyond it are closed on accept, before a byte is
 * read or written, so open file descriptors stay bounded). MAX_CONNECTIONS_PER_ADDRESS: a
 * socket beyond it is answered 429 rate_limited as soon as it is accepted, whatever it sends,
 * and closed once that is written: a refused socket holds no slot of MAX_CONNECTIONS for
 * longer than that. 0 disables either cap.
 */
function limitConnections(
  server: http.Server,
  config: Readonly<Config>,
  logger: Logger,
  onRefusal: RefusalObserver,
): void {
  if (config.maxConnections > 0) server.maxConnections = config.maxConnections;
  let dropped = 0;
  let dropLogTimer: NodeJS.Timeout | undefined;
  const logDrops = (): void => {
    if (dropped === 0) {
      dropLogTimer = undefined;
      return;
    }
    logger.warn(`refused ${dropped} connection(s) over MAX_CONNECTIONS`, {
      dropped,
      maxConnections: config.maxConnections,
    });
    dropped = 0;
    dropLogTimer = setTimeout(logDrops, DROP_LOG_INTERVAL_MS).unref();
  };
  server.on('drop', () => {
    dropped += 1;
    if (dropLogTimer === undefined) logDrops();
  });

  const perAddress = new Map<string, number>();
  const maxPerAddress = config.maxConnectionsPerAddress;
  if (maxPerAddress > 0) {
    server.on('connection', (socket: Socket) => {
      if (socket.remoteAddress === undefined) {
        socket.destroy(); // already gone
        return;
      }
      const key = addressKey(socket.remoteAddress);
      const open = perAddress.get(key) ?? 0;
      if (open >= maxPerAddress) {
        const refusal: BareError = {
          code: 'rate_limited',
          message:
            `too many open connections from your address (at most ${maxPerAddress}: ` +
            'MAX_CONNECTIONS_PER_ADDRESS); close some or retry later',
          headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) },
        };
        const requestId = newRequestId();
        logger.warn('connection refused: rate_limited', {
          requestId,
          status: ERROR_STATUS.rate_limited,
          code: refusal.code,
          maxConnectionsPerAddress: maxPerAddress,
        });
        // What the client sends is never read; a client gone first is not an error.
        socket.on('error', () => socket.destroy());
        socket.end(bareErrorBytes(refusal, requestId), () => socket.destroy());
        onRefusal(ERROR_STATUS.rate_limited, refusal.code);
        return;
      }
      perAddress.set(key, open + 1);
      socket.once('close', () => {
        const left = (perAddress.get(key) ?? 1) - 1;
        if (left === 0) perAddress.delete(key);
        else perAddress.set(key, left);
      });
    });
  }
}

/** Told of each answer the HTTP server gives outside the app (metrics count them). */
export type RefusalObserver = (status: number, code: ErrorCode) => void;

export function createHttpServer(
  app: RequestListener,
  config: Readonly<Config>,
  logger: Logger,
  onRefusal: RefusalObserver = () => {},
): http.Server {
  const requestTimeout = config.requestTimeoutSeconds * 1000;
  const server = http.createServer({
    requestTimeout,
    headersTimeout: Math.min(HEADERS_TIMEOUT_MS, requestTimeout),
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    maxHeaderSize: MAX_HEADER_BYTES,
    connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
  });
  limitConnections(server, config, logger, onRefusal);

  const serve = (req: IncomingMessage, res: ServerResponse): void => app(req, res);
  server.on('request', serve);
  // Without this listener Node would answer 100 Continue itself, before any check ran.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    markAwaitingContinue(req);
    serve(req, res);
  });
  attachUpgrades(server, serve);

  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    // As Node's default: answer only when no response of the app is under way on the socket;
    // a client that hung up (reset, or closed mid-request) is not answered or logged.
    const inFlight = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
    if (
      error.code === 'ECONNRESET' ||
      error.code === 'HPE_INVALID_EOF_STATE' ||
      !socket.writable ||
      inFlight?.headersSent === true
    ) {
      socket.destroy();
      return;
    }
    const answer = clientErrorAnswer(error, requestTimeout);
    const requestId = newRequestId();
    // One line, without error.rawPacket (the client's bytes).
    logger.warn(`client error: ${ERROR_STATUS[answer.code]} ${answer.code}`, {
      requestId,
      status: ERROR_STATUS[answer.code],
      code: answer.code,
      reason: error.code,
    });
    socket.end(bareErrorBytes(answer, requestId), () => socket.destroy());
    onRefusal(ERROR_STATUS[answer.code], answer.code);
  });
  return server;
}

/** Resolves with the bound address once listening; rejects on EADDRINUSE and the like. */
export function listen(server: http.Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => reject(error);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/**
 * Stops accepting connections, lets in-flight requests finish for up to `deadlineMs`, then
 * closes whatever sockets remain. Resolves when the server is closed.
 */
export function closeGracefully(server: http.Server, deadlineMs: number): Promise<void> {
  return new Promise((resolve) => {
    const deadline = setTimeout(() => server.closeAllConnections(), deadlineMs);
    // Keep-alive sockets would hold close() open until their idle timeout: close each one as
    // soon as it has no request in flight (now, and after each in-flight response).
    const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
    server.close(() => {
      clearTimeout(deadline);
      clearInterval(sweep);
      resolve();
    });
    server.closeIdleConnections();
  });
}
