/**
 * The client of the SAM3 server: one method per endpoint. Web-platform APIs only (fetch,
 * FormData, Blob, AbortSignal, URL, WebSocket), so the same code runs in a browser and in
 * Node 20+ (give Node 20, which has no global WebSocket, the `ws` package's class).
 */
import { base64UrlOfText } from './base64';
import { errorBodyOf, Sam3ApiError } from './errors';
import type {
  CachedFeaturesRequest,
  CachedFeaturesResponse,
  CloseSessionResponse,
  GpuId,
  HealthResponse,
  PropagateComplete,
  PropagateFrame,
  PropagateRequest,
  PropagateResponse,
  RemoveConceptResponse,
  RemoveObjectResponse,
  ResetSessionResponse,
  SegmentRequest,
  SegmentResponse,
  ServerInfo,
  SessionStatusResponse,
  SessionsListResponse,
  StartSessionRequest,
  StartSessionResponse,
  VideoPromptRequest,
  VideoPromptResponse,
} from './types';
import {
  propagationStream,
  WS_KEY_PROTOCOL_PREFIX,
  WS_PROTOCOL,
  type WebSocketLike,
} from './websocket';

export interface Sam3ClientOptions {
  /**
   * The server, e.g. "http://127.0.0.1:8000" (a path prefix is kept). In a browser "" or a
   * path means the page's origin.
   */
  baseUrl: string;
  /**
   * Sent as X-API-Key on HTTP requests; on the WebSocket (where a browser cannot set headers)
   * as the subprotocol "sam3.key.<base64url of its UTF-8>", offered with "sam3.v1".
   */
  apiKey?: string;
  /** Default: globalThis.fetch. */
  fetch?: typeof fetch;
  /** The WebSocket constructor for propagateStream. Default: globalThis.WebSocket. */
  WebSocket?: WebSocketLike;
}

export interface RequestOptions {
  /** Aborts the request: the promise (or the stream) rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A video file to upload (multipart/form-data). */
export interface VideoUpload {
  video: Blob;
  /** The file name sent with it (the server names its copy itself). Default "video". */
  filename?: string;
  /** The session id to use (session_id); default: a UUID the server picks. */
  sessionId?: string;
  /** The devices the session may go on (gpu_ids). */
  gpuIds?: GpuId[];
}

/** What startSession opens: an upload, or a JSON request (video_path, video_base64, video_url). */
export type StartSessionSource = VideoUpload | StartSessionRequest;

type FetchInit = NonNullable<Parameters<typeof fetch>[1]>;

interface Call {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  json?: unknown;
  form?: FormData;
  signal?: AbortSignal;
  /** Statuses besides 2xx whose body is the answer (503 of /health). */
  answerStatuses?: readonly number[];
}

function retryAfterOf(value: string | null): number | null {
  if (value === null || !/^\d+$/.test(value.trim())) return null;
  return Number(value.trim());
}

function segment(value: string | number): string {
  return encodeURIComponent(String(value));
}

export class Sam3Client {
  private readonly baseUrl: string;
  private readonly apiKey: string | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly WebSocketImpl: WebSocketLike | undefined;

  constructor(options: Sam3ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.apiKey = options.apiKey;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') throw new TypeError('no fetch: pass options.fetch');
    this.fetchImpl = fetchImpl;
    this.WebSocketImpl =
      options.WebSocket ??
      (globalThis as unknown as { WebSocket?: WebSocketLike }).WebSocket ??
      undefined;
  }

  /** GET / : server name, version and model. */
  info(options: RequestOptions = {}): Promise<ServerInfo> {
    return this.call({ method: 'GET', path: '/', signal: options.signal });
  }

  /** GET /health. A 503 (loading, degraded, stopping) resolves with its body too. */
  health(options: RequestOptions = {}): Promise<HealthResponse> {
    return this.call({
      method: 'GET',
      path: '/health',
      signal: options.signal,
      answerStatuses: [503],
    });
  }

  /** GET /openapi.json: the OpenAPI 3.1 document. */
  openApi(options: RequestOptions = {}): Promise<Record<string, unknown>> {
    return this.call({ method: 'GET', path: '/openapi.json', signal: options.signal });
  }

  /** POST /api/v1/image/segment. */
  segment(body: SegmentRequest, options: RequestOptions = {}): Promise<SegmentResponse> {
    return this.call({
      method: 'POST',
      path: '/api/v1/image/segment',
      json: body,
      signal: options.signal,
    });
  }

  /** POST /api/v1/image/cached-features: many text prompts on one image. */
  cachedFeatures(
    body: CachedFeaturesRequest,
    options: RequestOptions = {},
  ): Promise<CachedFeaturesResponse> {
    return this.call({
      method: 'POST',
      path: '/api/v1/image/cached-features',
      json: body,
      signal: options.signal,
    });
  }

  /**
   * POST /api/v1/video/session/start: a multipart upload ({video: Blob, ...}) or a JSON
   * request with exactly one of video_path, video_base64 and video_url.
   */
  startSession(
    source: StartSessionSource,
    options: RequestOptions = {},
  ): Promise<StartSessionResponse> {
    const path = '/api/v1/video/session/start';
    if ('video' in source) {
      const form = new FormData();
      if (source.sessionId !== undefined) form.append('session_id', source.sessionId);
      if (source.gpuIds !== undefined) form.append('gpu_ids', JSON.stringify(source.gpuIds));
      form.append('video', source.video, source.filename ?? 'video');
      return this.call({ method: 'POST', path, form, signal: options.signal });
    }
    return this.call({ method: 'POST', path, json: source, signal: options.signal });
  }

  /** GET /api/v1/video/sessions. */
  listSessions(options: RequestOptions = {}): Promise<SessionsListResponse> {
    return this.call({ method: 'GET', path: '/api/v1/video/sessions', signal: options.signal });
  }

  /** POST /api/v1/video/session/{id}/prompt: clicks, a box, or text concepts on one frame. */
  addPrompt(
    sessionId: string,
    body: VideoPromptRequest,
    options: RequestOptions = {},
  ): Promise<VideoPromptResponse> {
    return this.call({
      method: 'POST',
      path: `${this.sessionPath(sessionId)}/prompt`,
      json: body,
      signal: options.signal,
    });
  }

  /**
   * POST /api/v1/video/session/{id}/propagate: the whole result at once (`stream` is not
   * sent; see propagateStream). Aborting cancels the propagation on the server.
   */
  propagate(
    sessionId: string,
    body: PropagateRequest = {},
    options: RequestOptions = {},
  ): Promise<PropagateResponse> {
    const json: PropagateRequest = { ...body };
    delete json.stream;
    return this.call({
      method: 'POST',
      path: `${this.sessionPath(sessionId)}/propagate`,
      json,
      signal: options.signal,
    });
  }

  /**
   * WS /ws/propagate/{id}: yields each frame as the server computes it, in processing order,
   * and returns the "complete" message. Throws Sam3ApiError for an "error" message (its code),
   * `connection_failed` when the socket cannot open (a refused upgrade: 401, 429, 503) and
   * `connection_closed` when it closes before the end. `options.signal` closes the socket
   * (the server stops before its next frame) and the iteration rejects with the signal's
   * reason; leaving the loop early (break, return, throw) closes the socket as well.
   */
  propagateStream(
    sessionId: string,
    body: PropagateRequest = {},
    options: RequestOptions = {},
  ): AsyncGenerator<PropagateFrame, PropagateComplete, undefined> {
    const WebSocketImpl = this.WebSocketImpl;
    if (WebSocketImpl === undefined) {
      throw new TypeError('no WebSocket: pass options.WebSocket (e.g. the ws package in Node 20)');
    }
    const protocols = [WS_PROTOCOL];
    if (this.apiKey !== undefined) {
      protocols.push(WS_KEY_PROTOCOL_PREFIX + base64UrlOfText(this.apiKey));
    }
    return propagationStream({
      WebSocket: WebSocketImpl,
      url: this.webSocketUrl(`/ws/propagate/${segment(sessionId)}`),
      protocols,
      body,
      signal: options.signal,
    });
  }

  /** GET /api/v1/video/session/{id}/status. */
  sessionStatus(sessionId: string, options: RequestOptions = {}): Promise<SessionStatusResponse> {
    return this.call({
      method: 'GET',
      path: `${this.sessionPath(sessionId)}/status`,
      signal: options.signal,
    });
  }

  /** DELETE /api/v1/video/session/{id}/object/{obj_id}. */
  removeObject(
    sessionId: string,
    objId: number,
    options: RequestOptions = {},
  ): Promise<RemoveObjectResponse> {
    return this.call({
      method: 'DELETE',
      path: `${this.sessionPath(sessionId)}/object/${segment(objId)}`,
      signal: options.signal,
    });
  }

  /** DELETE /api/v1/video/session/{id}/concept/{concept_id}: a text concept and its objects. */
  removeConcept(
    sessionId: string,
    conceptId: number,
    options: RequestOptions = {},
  ): Promise<RemoveConceptResponse> {
    return this.call({
      method: 'DELETE',
      path: `${this.sessionPath(sessionId)}/concept/${segment(conceptId)}`,
      signal: options.signal,
    });
  }

  /** POST /api/v1/video/session/{id}/reset: clears every object (the video stays). */
  resetSession(sessionId: string, options: RequestOptions = {}): Promise<ResetSessionResponse> {
    return this.call({
      method: 'POST',
      path: `${this.sessionPath(sessionId)}/reset`,
      signal: options.signal,
    });
  }

  /** DELETE /api/v1/video/session/{id}: closes the session (a running propagation stops). */
  closeSession(sessionId: string, options: RequestOptions = {}): Promise<CloseSessionResponse> {
    return this.call({
      method: 'DELETE',
      path: this.sessionPath(sessionId),
      signal: options.signal,
    });
  }

  private sessionPath(sessionId: string): string {
    return `/api/v1/video/session/${segment(sessionId)}`;
  }

  private webSocketUrl(path: string): string {
    const page = (globalThis as unknown as { location?: { href?: string } }).location?.href;
    const url = new URL(this.baseUrl + path, page);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.toString();
  }

  private async call<T>(call: Call): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.apiKey !== undefined) headers['x-api-key'] = this.apiKey;
    const init: FetchInit = { method: call.method, headers, signal: call.signal };
    if (call.json !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(call.json);
    } else if (call.form !== undefined) {
      init.body = call.form;
    }
    // Called detached: a browser's fetch refuses any `this` but the window (or none).
    const fetchImpl = this.fetchImpl;
    let response: Response;
    let text: string;
    try {
      response = await fetchImpl(this.baseUrl + call.path, init);
      text = await response.text();
    } catch (error) {
      if (call.signal?.aborted) throw call.signal.reason;
      throw new Sam3ApiError({
        status: 0,
        code: 'connection_failed',
        message: `${call.method} ${call.path}: ${error instanceof Error ? error.message : String(error)}`,
        cause: error,
      });
    }
    const requestId = response.headers.get('x-request-id');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const answered = response.ok || (call.answerStatuses ?? []).includes(response.status);
    const error = errorBodyOf(body);
    if (answered && body !== undefined && error === null) return body as T;
    if (error !== null) {
      throw new Sam3ApiError({
        status: response.status,
        code: error.code,
        message: error.message,
        requestId,
        retryAfterSeconds: retryAfterOf(response.headers.get('retry-after')),
      });
    }
    throw new Sam3ApiError({
      status: response.status,
      // A failure status from something in front of the server (a proxy's HTML page), or a
      // success the client cannot read.
      code: response.ok ? 'invalid_response' : 'http_error',
      message: `${call.method} ${call.path}: HTTP ${response.status} without a JSON answer`,
      requestId,
      retryAfterSeconds: retryAfterOf(response.headers.get('retry-after')),
    });
  }
}
