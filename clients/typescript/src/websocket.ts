/**
 * WS /ws/propagate/{session_id} as an async generator: the propagate body is sent once the
 * socket is open, every {"type": "frame"} message is yielded in order (queued while the
 * consumer is busy: none is lost), {"type": "complete"} ends it, {"type": "error"} throws.
 */
import { errorBodyOf, Sam3ApiError, statusOfErrorCode } from './errors';
import type { PropagateComplete, PropagateFrame, PropagateRequest } from './types';

/** The events the client listens to (the parts of the DOM events it reads). */
export interface WebSocketEventLike {
  /** "open", "message", "error" or "close". */
  readonly type: string;
  /** message: the text of the message. */
  readonly data?: unknown;
  /** close: the close code and reason. */
  readonly code?: number;
  readonly reason?: string;
  /** error: a description, where the implementation gives one (`ws` does, browsers do not). */
  readonly message?: string;
}

/** The part of a WebSocket (the browser's, or the `ws` package's) the client uses. */
export interface WebSocketInstanceLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(
    type: 'open' | 'message' | 'error' | 'close',
    listener: (event: WebSocketEventLike) => void,
  ): void;
}

/** A WebSocket constructor: globalThis.WebSocket in a browser, or `ws`'s WebSocket in Node. */
export type WebSocketLike = new (url: string, protocols?: string[]) => WebSocketInstanceLike;

/** The subprotocol the server selects (SPEC protocol version 1). */
export const WS_PROTOCOL = 'sam3.v1';
/** Prefix of the subprotocol that carries the API key: sam3.key.<base64url(utf8(key))>. */
export const WS_KEY_PROTOCOL_PREFIX = 'sam3.key.';

const CONNECTING = 0;
const OPEN = 1;
const CLOSE_NORMAL = 1000;

type SocketEvent =
  | { kind: 'open' }
  | { kind: 'message'; data: unknown }
  | { kind: 'error'; message: string | undefined }
  | { kind: 'close'; code: number; reason: string };

export interface StreamOptions {
  WebSocket: WebSocketLike;
  url: string;
  protocols: string[];
  body: PropagateRequest;
  signal?: AbortSignal;
}

function invalidMessage(detail: string, closeCode: number | null = null): Sam3ApiError {
  return new Sam3ApiError({
    status: 0,
    code: 'invalid_response',
    message: `propagation stream: ${detail}`,
    closeCode,
  });
}

function parseMessage(data: unknown): { type?: unknown } {
  if (typeof data !== 'string') throw invalidMessage('a message that is not text');
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw invalidMessage('a message that is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw invalidMessage('a message that is not a JSON object');
  }
  return parsed as { type?: unknown };
}

/** The status in `ws`'s "Unexpected server response: 401"; 0 when the error does not say. */
function refusedStatus(message: string | undefined): number {
  const match = /^Unexpected server response: ([1-5]\d\d)$/.exec(message ?? '');
  return match === null ? 0 : Number(match[1]);
}

export async function* propagationStream(
  options: StreamOptions,
): AsyncGenerator<PropagateFrame, PropagateComplete, undefined> {
  const { signal } = options;
  signal?.throwIfAborted();
  // `stream` belongs to the HTTP body; the socket is the stream (the server refuses it).
  const body: PropagateRequest = { ...options.body };
  delete body.stream;
  const socket = new options.WebSocket(options.url, options.protocols);
  const events: SocketEvent[] = [];
  let wake: (() => void) | null = null;
  const push = (event: SocketEvent): void => {
    events.push(event);
    const resolve = wake;
    wake = null;
    resolve?.();
  };
  let closed = false;
  let opened = false;
  let errorText: string | undefined;
  socket.addEventListener('open', () => push({ kind: 'open' }));
  socket.addEventListener('message', (event) => push({ kind: 'message', data: event.data }));
  socket.addEventListener('error', (event) => push({ kind: 'error', message: event.message }));
  socket.addEventListener('close', (event) => {
    closed = true;
    push({ kind: 'close', code: event.code ?? 1005, reason: event.reason ?? '' });
  });
  const closeSocket = (reason: string): void => {
    if (closed) return;
    if (socket.readyState === CONNECTING || socket.readyState === OPEN) {
      socket.close(CLOSE_NORMAL, reason);
    }
  };
  // Closing at once stops the server before its next frame, even while nobody is reading.
  const onAbort = (): void => {
    closeSocket('aborted');
    push({ kind: 'close', code: CLOSE_NORMAL, reason: 'aborted' });
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      signal?.throwIfAborted();
      const event = events.shift();
      if (event === undefined) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        continue;
      }
      switch (event.kind) {
        case 'open':
          opened = true;
          socket.send(JSON.stringify(body));
          break;
        case 'message': {
          const message = parseMessage(event.data);
          if (message.type === 'frame') {
            yield message as PropagateFrame;
          } else if (message.type === 'complete') {
            return message as PropagateComplete;
          } else if (message.type === 'error') {
            const error = errorBodyOf(message);
            if (error === null) throw invalidMessage('an error message without error.code');
            throw new Sam3ApiError({
              status: statusOfErrorCode(error.code),
              code: error.code,
              message: error.message,
            });
          } else {
            throw invalidMessage(`a message of unknown type ${JSON.stringify(message.type)}`);
          }
          break;
        }
        case 'error':
          errorText = event.message;
          break;
        case 'close':
          if (opened) {
            throw new Sam3ApiError({
              status: 0,
              code: 'connection_closed',
              message:
                `the propagation socket closed (${event.code}${event.reason ? ` ${event.reason}` : ''})` +
                ' before the propagation completed',
              closeCode: event.code,
            });
          }
          throw new Sam3ApiError({
            status: refusedStatus(errorText),
            code: 'connection_failed',
            message: `the propagation socket could not connect${errorText ? `: ${errorText}` : ''}`,
            closeCode: event.code,
          });
      }
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    // A break out of the consumer's loop, an error or the end: the socket goes.
    closeSocket('client done');
  }
}
