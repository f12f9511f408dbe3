/**
 * WS /ws/propagate/{id}: a propagation streamed over a WebSocket (SPEC.md).
 *
 * Upgrades go through the Express app like any request (attachUpgrades): request id, CORS,
 * the shutdown gate, the rate limit and the API key all run before the 101, and a refusal is
 * an ordinary HTTP error response after which the socket is destroyed. The route below then
 * hands the socket to `ws` (noServer mode; permessage-deflate off; 64 KiB messages at most,
 * a bigger one closes with 1009).
 *
 * Protocol: the client sends one JSON text message like the propagate body (without
 * `stream`); the server sends {"type": "frame", ...} per frame in processing order, then
 * {"type": "complete", "total_frames"} and closes with 1000, or {"type": "error", "error"}
 * and closes (1008 for a refused request, 1013 for a conflict or overload, 1011 for a fault).
 * Closing the socket cancels the propagation before its next frame. Frames are computed one
 * at a time, each after the previous one was handed to the socket; a client that lets more
 * than WS_MAX_BUFFERED_MB pile up unread is terminated (and its propagation cancelled).
 */
import http, { type IncomingMessage, type RequestListener } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Router, type Request } from 'express';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { Config } from '../config';
import type { VideoSessions } from '../engine/video/sessions';
import type { Logger } from '../logging';
import { WS_PROTOCOL } from './auth';
import type { EngineState } from './engine-state';
import { ApiError, mapError } from './errors';
import {
  completeMessage,
  errorMessage,
  frameMessage,
  propagateRequest,
  sessionIdParam,
} from './routes/video';
import { propagateRequestSchema, type PropagateRequestBody } from './schemas';
import { compileValidator, createAjv } from './validation';

/** Largest client message, bytes (the propagate body is a few dozen). */
export const WS_MAX_PAYLOAD_BYTES = 64 * 1024;
/** Most fragments of one client message. */
const WS_MAX_FRAGMENTS = 64;
/** How long a closing socket may take to finish its close handshake on shutdown. */
const CLOSE_GRACE_MS = 1000;
/** An upgrade must get its answer (101 or a refusal) within this; else the socket is dropped. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A socket must send its propagate message within this after the 101. */
const FIRST_MESSAGE_TIMEOUT_MS = 30_000;
const BYTES_PER_MB = 1024 * 1024;

export const WS_PROPAGATE_PATH = '/ws/propagate/:id';

/** The upgrade's raw socket and first bytes, on a request that came through 'upgrade'. */
const UPGRADE = Symbol('sam3.upgrade');

interface UpgradeInfo {
  socket: Duplex;
  head: Buffer;
}

type UpgradeRequest = IncomingMessage & { [UPGRADE]?: UpgradeInfo };

/**
 * Routes every upgrade request through `app` with a response bound to the raw socket, so it
 * meets the same middleware as any request. A response the app writes (a refusal) is the last
 * thing on the socket: it is closed once the response is out.
 */
export function attachUpgrades(server: http.Server, app: RequestListener): void {
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    // A body would leave the body parser waiting on a stream Node no longer parses.
    if (
      req.headers['content-length'] !== undefined ||
      req.headers['transfer-encoding'] !== undefined
    ) {
      const body = JSON.stringify({
        error: { code: 'invalid_request', message: 'a WebSocket upgrade is a GET without a body' },
      });
      socket.end(
        'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\n' +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        () => socket.destroy(),
      );
      return;
    }
    (socket as Socket).setTimeout?.(HANDSHAKE_TIMEOUT_MS, () => socket.destroy());
    (req as UpgradeRequest)[UPGRADE] = { socket, head };
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    res.on('finish', () => {
      res.detachSocket(socket as Socket);
      socket.end(() => socket.destroy());
    });
    app(req, res);
  });
}

/** WebSocket close codes (RFC 6455 §7.4.1). */
const CLOSE_NORMAL = 1000;
const CLOSE_GOING_AWAY = 1001;
const CLOSE_POLICY = 1008;
const CLOSE_INTERNAL = 1011;
const CLOSE_TRY_LATER = 1013;

function closeCodeFor(status: number): number {
  if (status === 409 || status === 429 || status === 503) return CLOSE_TRY_LATER;
  return status < 500 ? CLOSE_POLICY : CLOSE_INTERNAL;
}

interface Connection {
  ws: WebSocket;
  controller: AbortController;
}

export interface PropagationSocketsOptions {
  config: Readonly<Config>;
  engineState: EngineState;
  logger: Logger;
}

export class PropagationSockets {
  private readonly wss = new WebSocketServer({
    noServer: true,
    // A browser that sent its API key as a subprotocol (auth.ts) is answered with
    // WS_PROTOCOL, never with the key's; other clients offer none and get none.
    handleProtocols: (protocols) => (protocols.has(WS_PROTOCOL) ? WS_PROTOCOL : false),
    maxPayload: WS_MAX_PAYLOAD_BYTES,
    perMessageDeflate: false,
    clientTracking: false,
    maxFragments: WS_MAX_FRAGMENTS,
  });
  private readonly connections = new Set<Connection>();
  private readonly maxBufferedBytes: number;
  /** The propagate body without `stream` (the socket is the stream). */
  private readonly validateMessage = compileValidator<PropagateRequestBody>(
    createAjv(),
    propagateRequestSchema({ stream: false }),
  );
  private accepting = true;

  constructor(private readonly options: PropagationSocketsOptions) {
    this.maxBufferedBytes = options.config.wsMaxBufferedMb * BYTES_PER_MB;
    // The 101 carries the request id too.
    this.wss.on('headers', (headers: string[], req: IncomingMessage) => {
      const id = (req as Request).res?.locals.requestId;
      if (typeof id === 'string') headers.push(`X-Request-Id: ${id}`);
    });
  }

  /** The Express route that completes upgrades of WS_PROPAGATE_PATH. */
  routes(): Router {
    const router = Router();
    router.get(WS_PROPAGATE_PATH, (req, res) => {
      const upgrade = (req as unknown as UpgradeRequest)[UPGRADE];
      if (upgrade === undefined) {
        throw new ApiError(
          'invalid_request',
          'this endpoint is a WebSocket: connect with an Upgrade: websocket request',
        );
      }
      if (!this.accepting) throw new ApiError('not_ready', 'the server is shutting down');
      const sessions = this.options.engineState.requireVideo();
      const sessionId = req.params.id;
      const logger = res.locals.logger;
      // From here `ws` owns the socket (and answers a malformed handshake itself).
      res.detachSocket(upgrade.socket as Socket);
      (upgrade.socket as Socket).setTimeout?.(0);
      this.wss.handleUpgrade(req, upgrade.socket, upgrade.head, (ws) =>
        this.serve(ws, sessions, sessionId, logger),
      );
    });
    return router;
  }

  /**
   * Shutdown: no new sockets; open ones are closed with 1001 and their propagations
   * cancelled; sockets that do not finish the close handshake in time are terminated.
   */
  async closeAll(): Promise<void> {
    this.accepting = false;
    const open = [...this.connections];
    await Promise.all(
      open.map(
        ({ ws, controller }) =>
          new Promise<void>((resolve) => {
            controller.abort();
            if (ws.readyState === WebSocket.CLOSED) {
              resolve();
              return;
            }
            const timer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
            ws.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            ws.close(CLOSE_GOING_AWAY, 'server shutting down');
          }),
      ),
    );
    this.wss.close();
  }

  private serve(ws: WebSocket, sessions: VideoSessions, rawId: string, logger: Logger): void {
    const connection: Connection = { ws, controller: new AbortController() };
    const { controller } = connection;
    this.connections.add(connection);
    let received = false;
    logger.info('websocket opened', { sessionId: rawId });

    const send = (message: unknown): void => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
    };
    const fail = (error: unknown): void => {
      const mapped = mapError(error);
      if (mapped.internal) {
        logger.error('propagation stream failed', {
          error: error instanceof Error ? { message: error.message, stack: error.stack } : error,
        });
      }
      controller.abort();
      send(errorMessage(error));
      if (ws.readyState === WebSocket.OPEN) {
        ws.close(closeCodeFor(mapped.status), mapped.body.error.code);
      }
    };

    const silence = setTimeout(
      () =>
        fail(
          new ApiError(
            'invalid_request',
            `invalid request: no propagate message within ${FIRST_MESSAGE_TIMEOUT_MS / 1000} s`,
          ),
        ),
      FIRST_MESSAGE_TIMEOUT_MS,
    );

    ws.on('close', (code) => {
      clearTimeout(silence);
      controller.abort();
      this.connections.delete(connection);
      logger.info(`websocket closed (${code})`, { sessionId: rawId, code });
    });
    // Protocol violations (a message over maxPayload: 1009; bad frames: 1002) close the socket.
    ws.on('error', (error) => {
      controller.abort();
      logger.debug(`websocket closed on a protocol error: ${error.message}`);
    });

    let sessionId: string;
    try {
      sessionId = sessionIdParam(rawId);
      if (!sessions.has(sessionId)) {
        throw new ApiError('not_found', `no video session ${sessionId}`);
      }
    } catch (error) {
      fail(error);
      return;
    }

    ws.on('message', (data: RawData, isBinary: boolean) => {
      clearTimeout(silence);
      if (received) {
        fail(
          new ApiError(
            'invalid_request',
            'invalid request: one propagate message per connection; open another socket',
          ),
        );
        return;
      }
      received = true;
      let body: PropagateRequestBody;
      try {
        if (isBinary) {
          throw new ApiError('invalid_request', 'invalid request: send a JSON text message');
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(data.toString());
        } catch {
          throw new ApiError('invalid_json', 'the message is not valid JSON');
        }
        body = this.validateMessage(parsed);
      } catch (error) {
        fail(error);
        return;
      }
      sessions
        .propagate(sessionId, propagateRequest(body), {
          signal: controller.signal,
          onFrame: (frame) => {
            // A close frame from the client makes the socket CLOSING before its 'close' event.
            if (ws.readyState !== WebSocket.OPEN) {
              controller.abort();
              return;
            }
            send(frameMessage(frame));
            if (ws.bufferedAmount > this.maxBufferedBytes) {
              logger.warn('websocket client is not reading; terminating it', {
                sessionId,
                bufferedBytes: ws.bufferedAmount,
              });
              controller.abort();
              ws.terminate();
            }
          },
        })
        .then((summary) => {
          if (controller.signal.aborted) return;
          send(completeMessage(summary.totalFrames));
          ws.close(CLOSE_NORMAL, 'complete');
        })
        .catch(fail);
    });
  }
}
