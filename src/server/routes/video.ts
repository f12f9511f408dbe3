/**
 * The video session endpoints of SPEC.md ("Video sessions"), over the engine's VideoSessions:
 * start (JSON or multipart), prompt, propagate (JSON, or NDJSON with `stream`), status,
 * remove object, reset, close and list. The WebSocket stream is in ../ws.ts and sends the
 * same messages as the NDJSON stream (built here).
 */
import { randomUUID } from 'node:crypto';
import { unlink } from 'node:fs/promises';
import path from 'node:path';
import { Router, type Request, type Response } from 'express';
import multer, { MulterError } from 'multer';
import type { Config } from '../../config';
import type {
  FrameResult,
  PropagateRequest,
  SessionState,
  VideoSessions,
  VideoSource,
} from '../../engine/video/sessions';
import type { EngineState } from '../engine-state';
import { ApiError, mapError, type ErrorBody } from '../errors';
import {
  MAX_FORM_FIELD_LENGTH,
  MAX_OBJECT_ID,
  SESSION_ID_PATTERN,
  VIDEO_SOURCE_FIELDS,
  type GpuId,
  type PropagateRequestBody,
  type StartSessionFormFields,
  type StartSessionRequestBody,
  type VideoPromptRequestBody,
} from '../schemas';

const BYTES_PER_MB = 1024 * 1024;
const SESSION_ID = new RegExp(SESSION_ID_PATTERN);
/** The multipart field that carries the video file. */
export const VIDEO_FILE_FIELD = 'video';
/** Text fields of a multipart start request (session_id, gpu_ids). */
const MAX_FORM_FIELDS = 2;

export interface VideoRouteOptions {
  config: Readonly<Config>;
  engineState: EngineState;
  validateStart: (body: unknown) => StartSessionRequestBody;
  validateStartFields: (body: unknown) => StartSessionFormFields;
  validateGpuIds: (value: unknown) => { gpu_ids: GpuId[] };
  validatePrompt: (body: unknown) => VideoPromptRequestBody;
  validatePropagate: (body: unknown) => PropagateRequestBody;
}

type ObjectResult = FrameResult['objects'][number];

/** One object as the API sends it. */
export interface ApiObject {
  id: number;
  mask: ObjectResult['mask'];
  box: ObjectResult['box'];
  score: number;
  present: boolean;
  concept_id?: number;
  tracker_score?: number;
}

function apiObject(object: ObjectResult): ApiObject {
  return {
    id: object.id,
    mask: object.mask,
    box: object.box,
    score: object.score,
    present: object.present,
    ...(object.conceptId !== undefined
      ? { concept_id: object.conceptId, tracker_score: object.trackerScore }
      : {}),
  };
}

/** One frame's results as the API sends them (propagate results, stream messages). */
export function apiFrame(frame: FrameResult): {
  frame_index: number;
  objects: ApiObject[];
  objects_dropped?: number;
} {
  return {
    frame_index: frame.frameIndex,
    objects: frame.objects.map(apiObject),
    ...(frame.objectsDropped !== undefined ? { objects_dropped: frame.objectsDropped } : {}),
  };
}

/** A frame of a propagation stream, as the WebSocket and NDJSON streams send it. */
export type FrameMessage = { type: 'frame' } & ReturnType<typeof apiFrame>;

export function frameMessage(frame: FrameResult): FrameMessage {
  return { type: 'frame', ...apiFrame(frame) };
}

export function completeMessage(totalFrames: number): { type: 'complete'; total_frames: number } {
  return { type: 'complete', total_frames: totalFrames };
}

export function errorMessage(error: unknown): { type: 'error' } & ErrorBody {
  return { type: 'error', ...mapError(error).body };
}

/** The engine's propagate request from a validated body. */
export function propagateRequest(body: PropagateRequestBody): PropagateRequest {
  return {
    direction: body.direction ?? 'forward',
    startFrameIndex: body.start_frame_index,
    maxFrames: body.max_frames,
    hotstartDelay: body.hotstart_delay,
  };
}

/** A session id from the URL; one that cannot exist is an unknown session. */
export function sessionIdParam(value: string | string[] | undefined): string {
  if (typeof value !== 'string' || !SESSION_ID.test(value)) {
    throw new ApiError('not_found', 'no such video session');
  }
  return value;
}

function objectIdParam(value: string | string[] | undefined, name = 'obj_id'): number {
  const id = typeof value === 'string' && /^[1-9][0-9]{0,9}$/.test(value) ? Number(value) : NaN;
  if (!(id <= MAX_OBJECT_ID)) {
    throw new ApiError(
      'invalid_request',
      `invalid request: ${name} must be an integer from 1 to ${MAX_OBJECT_ID}`,
    );
  }
  return id;
}

function devicesOf(gpuIds: readonly GpuId[] | undefined): string[] | undefined {
  return gpuIds?.map((id) => (id === 'cpu' ? 'cpu' : `cuda:${id}`));
}

function hasBody(req: Request): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** The JSON body, `{}` when there is none; anything but JSON is 415. */
function jsonBody(req: Request): unknown {
  if (!hasBody(req)) return req.body ?? {};
  if (!req.is('application/json')) {
    throw new ApiError('unsupported_media', 'Content-Type must be application/json');
  }
  return req.body;
}

function describeSession(state: SessionState): Record<string, unknown> {
  return {
    session_id: state.sessionId,
    status: state.status,
    current_objects: state.objectIds,
    concepts: state.concepts.map((concept) => ({
      concept_id: concept.id,
      text: concept.text,
      object_ids: concept.objectIds,
    })),
    frames_processed: state.framesProcessed,
    total_frames: state.totalFrames,
    gpu_memory_used_mb: state.memoryBytes / BYTES_PER_MB,
  };
}

/** multer's refusals as API errors (its partial files are already removed). */
function uploadError(error: unknown, maxMb: number): unknown {
  if (error instanceof MulterError) {
    switch (error.code) {
      case 'LIMIT_FILE_SIZE':
        return new ApiError(
          'payload_too_large',
          `the video file is larger than ${maxMb} MB (MAX_UPLOAD_SIZE_MB)`,
        );
      case 'LIMIT_UNEXPECTED_FILE':
      case 'LIMIT_FILE_COUNT':
        return new ApiError(
          'invalid_request',
          `invalid request: send one file, in the "${VIDEO_FILE_FIELD}" field`,
        );
      case 'LIMIT_PART_COUNT':
      case 'LIMIT_FIELD_COUNT':
        return new ApiError(
          'invalid_request',
          `invalid request: too many form fields (at most the "${VIDEO_FILE_FIELD}" file, ` +
            'session_id and gpu_ids)',
        );
      case 'LIMIT_FIELD_VALUE':
        return new ApiError(
          'invalid_request',
          `invalid request: form fields are at most ${MAX_FORM_FIELD_LENGTH} characters`,
        );
      default:
        return new ApiError('invalid_request', 'invalid request: malformed multipart form');
    }
  }
  // busboy's parse errors are plain Errors; a file system error (no space, no permission) is
  // the server's fault and stays an internal error.
  if (error instanceof Error && (error as NodeJS.ErrnoException).syscall === undefined) {
    return new ApiError('invalid_request', 'invalid request: malformed multipart/form-data body');
  }
  return error;
}

export function videoRoutes(options: VideoRouteOptions): Router {
  const { config, engineState } = options;
  const router = Router();
  const maxBufferedBytes = config.wsMaxBufferedMb * BYTES_PER_MB;

  const upload = multer({
    storage: multer.diskStorage({
      destination: config.uploadDir,
      filename: (_req, _file, done) => done(null, `upload-${randomUUID()}.video`),
    }),
    limits: {
      fileSize: Math.floor(config.maxUploadSizeMb * BYTES_PER_MB),
      files: 1,
      fields: MAX_FORM_FIELDS,
      parts: MAX_FORM_FIELDS + 1,
      fieldSize: MAX_FORM_FIELD_LENGTH,
      fieldNameSize: 64,
      headerPairs: 16,
    },
  }).single(VIDEO_FILE_FIELD);

  const receiveUpload = (req: Request, res: Response): Promise<void> =>
    new Promise((resolve, reject) => {
      upload(req, res, (error: unknown) => {
        if (error === undefined || error === null) resolve();
        else reject(uploadError(error, config.maxUploadSizeMb));
      });
    });

  const startMultipart = async (
    req: Request,
    res: Response,
  ): Promise<{ source: VideoSource; fields: StartSessionRequestBody }> => {
    await receiveUpload(req, res);
    const file = req.file?.path;
    try {
      if (file === undefined) {
        throw new ApiError(
          'invalid_request',
          `invalid request: /${VIDEO_FILE_FIELD}: the video file is required`,
        );
      }
      const fields = options.validateStartFields({ ...(req.body as object) });
      let gpuIds: GpuId[] | undefined;
      if (fields.gpu_ids !== undefined) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(fields.gpu_ids);
        } catch {
          throw new ApiError('invalid_request', 'invalid request: /gpu_ids: must be a JSON array');
        }
        gpuIds = options.validateGpuIds({ gpu_ids: parsed }).gpu_ids;
      }
      return {
        source: { kind: 'upload', file: path.resolve(file) },
        fields: { session_id: fields.session_id, gpu_ids: gpuIds },
      };
    } catch (error) {
      if (file !== undefined) await unlink(file).catch(() => undefined);
      throw error;
    }
  };

  router.post('/api/v1/video/session/start', async (req, res) => {
    const sessions = engineState.requireVideo();
    let source: VideoSource;
    let body: StartSessionRequestBody;
    if (req.is('multipart/form-data')) {
      // Refuse before the upload is written when no session could start anyway.
      sessions.assertCapacity();
      ({ source, fields: body } = await startMultipart(req, res));
    } else {
      const raw = jsonBody(req);
      if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
        const given = VIDEO_SOURCE_FIELDS.filter((field) => field in raw);
        if (given.length !== 1) {
          throw new ApiError(
            'invalid_request',
            `invalid request: exactly one of ${VIDEO_SOURCE_FIELDS.join(', ')} is required` +
              (given.length > 1 ? ` (got ${given.join(' and ')})` : ''),
          );
        }
      }
      body = options.validateStart(raw);
      source =
        body.video_url !== undefined
          ? { kind: 'url', url: body.video_url }
          : body.video_base64 !== undefined
            ? { kind: 'base64', data: body.video_base64 }
            : { kind: 'path', path: body.video_path as string };
    }
    const created = await sessions.create({
      source,
      sessionId: body.session_id,
      devices: devicesOf(body.gpu_ids),
    });
    const info = created.videoInfo;
    res.json({
      session_id: created.sessionId,
      video_info: {
        total_frames: info.totalFrames,
        fps: info.fps,
        resolution: { width: info.width, height: info.height },
        duration_seconds: info.durationSeconds,
      },
      status: 'ready',
    });
  });

  router.get('/api/v1/video/sessions', (_req, res) => {
    const sessions = engineState.requireVideo().list();
    res.json({
      sessions: sessions.map((state) => ({
        session_id: state.sessionId,
        type: 'video',
        created_at: state.createdAt.toISOString(),
        status: state.status,
        objects_count: state.objectIds.length,
      })),
      total_sessions: sessions.length,
    });
  });

  router.post('/api/v1/video/session/:id/prompt', async (req, res) => {
    const sessions = engineState.requireVideo();
    const sessionId = sessionIdParam(req.params.id);
    const body = options.validatePrompt(jsonBody(req));
    const result = await sessions.prompt(sessionId, {
      frameIndex: body.frame_index,
      prompts: body.prompts,
      objId: body.obj_id ?? null,
    });
    res.json({
      frame_index: result.frameIndex,
      obj_id: result.objects.map((o) => o.id),
      masks: result.objects.map((o) => o.mask),
      boxes: result.objects.map((o) => o.box),
      scores: result.objects.map((o) => o.score),
      present: result.objects.map((o) => o.present),
      ...(result.concepts !== undefined
        ? { concepts: result.concepts.map((c) => ({ concept_id: c.id, text: c.text })) }
        : {}),
      ...(result.conceptSession
        ? {
            concept_ids: result.objects.map((o) => o.conceptId as number),
            tracker_scores: result.objects.map((o) => o.trackerScore as number),
          }
        : {}),
      ...(result.objectsDropped !== undefined ? { objects_dropped: result.objectsDropped } : {}),
      status: 'prompt_added',
    });
  });

  router.post('/api/v1/video/session/:id/propagate', async (req, res) => {
    const sessions = engineState.requireVideo();
    const sessionId = sessionIdParam(req.params.id);
    const body = options.validatePropagate(jsonBody(req));
    const controller = new AbortController();
    // A client that goes away cancels the propagation before its next frame.
    res.on('close', () => {
      if (!res.writableFinished) controller.abort();
    });
    if (body.stream === true) {
      await streamPropagation(req, res, sessions, sessionId, body, controller, maxBufferedBytes);
      return;
    }
    const results: Record<string, ReturnType<typeof apiFrame>> = {};
    const summary = await sessions.propagate(sessionId, propagateRequest(body), {
      signal: controller.signal,
      onFrame: (frame) => {
        results[String(frame.frameIndex)] = apiFrame(frame);
      },
    });
    if (controller.signal.aborted) return;
    res.json({
      session_id: sessionId,
      results,
      total_frames: summary.totalFrames,
      processing_time_ms: summary.processingTimeMs,
    });
  });

  router.get('/api/v1/video/session/:id/status', (req, res) => {
    const sessions = engineState.requireVideo();
    res.json(describeSession(sessions.status(sessionIdParam(req.params.id))));
  });

  router.delete('/api/v1/video/session/:id/object/:objId', async (req, res) => {
    const sessions = engineState.requireVideo();
    const sessionId = sessionIdParam(req.params.id);
    const objId = objectIdParam(req.params.objId);
    await sessions.removeObject(sessionId, objId);
    res.json({ session_id: sessionId, obj_id: objId, status: 'removed' });
  });

  router.delete('/api/v1/video/session/:id/concept/:conceptId', async (req, res) => {
    const sessions = engineState.requireVideo();
    const sessionId = sessionIdParam(req.params.id);
    const conceptId = objectIdParam(req.params.conceptId, 'concept_id');
    const removed = await sessions.removeConcept(sessionId, conceptId);
    res.json({
      session_id: sessionId,
      concept_id: conceptId,
      removed_objects: removed,
      status: 'removed',
    });
  });

  router.post('/api/v1/video/session/:id/reset', async (req, res) => {
    const sessions = engineState.requireVideo();
    const sessionId = sessionIdParam(req.params.id);
    const body = jsonBody(req);
    if (typeof body !== 'object' || body === null || Object.keys(body).length > 0) {
      throw new ApiError('invalid_request', 'invalid request: reset takes no body (or {})');
    }
    const cleared = await sessions.reset(sessionId);
    res.json({ session_id: sessionId, status: 'reset', objects_cleared: cleared });
  });

  router.delete('/api/v1/video/session/:id', async (req, res) => {
    const sessions = engineState.requireVideo();
    const closed = await sessions.close(sessionIdParam(req.params.id));
    res.json({
      session_id: closed.sessionId,
      status: 'closed',
      memory_freed_mb: closed.memoryFreedBytes / BYTES_PER_MB,
    });
  });

  return router;
}

/**
 * stream: true. Errors before the first frame are ordinary error responses; later ones end
 * the stream with an error line. A client that lets more than WS_MAX_BUFFERED_MB pile up
 * unread is disconnected (which cancels the propagation).
 */
async function streamPropagation(
  _req: Request,
  res: Response,
  sessions: VideoSessions,
  sessionId: string,
  body: PropagateRequestBody,
  controller: AbortController,
  maxBufferedBytes: number,
): Promise<void> {
  const begin = (): void => {
    if (res.headersSent) return;
    res.status(200).set({
      'Content-Type': 'application/x-ndjson; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
  };
  const send = (message: unknown): void => {
    begin();
    res.write(`${JSON.stringify(message)}\n`);
    if (res.writableLength > maxBufferedBytes) {
      res.locals.logger.warn('propagation stream client is not reading; disconnecting', {
        sessionId,
        bufferedBytes: res.writableLength,
      });
      controller.abort();
      res.destroy();
    }
  };
  try {
    const summary = await sessions.propagate(sessionId, propagateRequest(body), {
      signal: controller.signal,
      onFrame: (frame) => send(frameMessage(frame)),
    });
    if (controller.signal.aborted) return;
    send(completeMessage(summary.totalFrames));
    res.end();
  } catch (error) {
    if (!res.headersSent) throw error;
    if (!res.destroyed) {
      res.locals.logger.warn(`propagation stream failed: ${mapError(error).body.error.code}`, {
        sessionId,
        error: error instanceof Error ? error.message : String(error),
      });
      res.end(`${JSON.stringify(errorMessage(error))}\n`);
    }
  }
}
