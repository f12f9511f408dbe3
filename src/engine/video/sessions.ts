/**
 * VideoSessions: the engine's video facade (docs/video-internals.md §3). A session is one
 * video (a file it may own), its probe, a window of decoded frames and a native tracker on one
 * device. The server's routes and WebSocket handler use only this class.
 *
 * - Admission: at most `maxSessions` sessions, counting those still starting; ids unique among
 *   open and starting sessions; placement on the allowed device with the fewest sessions.
 * - One operation at a time per session (prompt, propagate, remove, reset): a second one is
 *   refused as busy, never queued.
 * - A propagation is one tracker step per frame (one executor task each, so image requests on
 *   the same device interleave), with the caller's AbortSignal checked before every frame, and
 *   the next frame computed only after the caller has taken the previous one.
 * - A reaper closes sessions idle longer than `sessionTimeoutMs` (never while one works).
 * - Every close releases the tracker, the frame source and the session's own files.
 *
 * Coordinates are normalized [0, 1]; boxes [cx, cy, w, h]; masks COCO RLE at the video size.
 */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../logging';
import type { NativeEngine, NativeTracker, TrackerFrame } from '../../native/types';
import { MAX_OBJECT_CLICKS } from '../input-limits';
import { planQueries, PromptPlanError, type NormalizedBox, type PromptInput } from '../prompt-plan';
import type { PromptTokenizer, RleMask } from '../segmenter';
import { FrameSource } from './frame-source';
import { probeVideo, type VideoInfo } from './probe';
import { downloadVideo } from './url-fetch';
import { openVideoInput, type VideoInput } from './video-input';

import { SESSION_RETRY_AFTER_SECONDS, VideoSessionError } from './session-errors';

export type { VideoInfo } from './probe';
export { VideoSessionError, type VideoSessionErrorCode } from './session-errors';

/** Where a session's video comes from. */
export type VideoSource =
  | { kind: 'url'; url: string }
  | { kind: 'base64'; data: string }
  | { kind: 'path'; path: string }
  /** A file already written under the upload directory (multipart); the session owns it. */
  | { kind: 'upload'; file: string };

export interface CreateSessionRequest {
  source: VideoSource;
  /** [A-Za-z0-9_-]{1,64}, validated upstream; else a UUID. */
  sessionId?: string;
  /** Devices the session may go on ("cpu", "cuda:N"); default: every video device. */
  devices?: readonly string[];
}

export interface CreatedSession {
  sessionId: string;
  device: string;
  videoInfo: VideoInfo;
}

/** One object's result on one frame. */
export interface ObjectResult {
  id: number;
  mask: RleMask;
  /** Normalized [cx, cy, w, h] of the binarized mask (zeros when it is empty). */
  box: [number, number, number, number];
  /** Predicted IoU of the chosen mask, in [0, 1]. */
  score: number;
  /** Whether the tracker sees the object on this frame (object score logit > 0). */
  present: boolean;
  /** Objects found by a text prompt: their concept and the tracker's score on this frame. */
  conceptId?: number;
  trackerScore?: number;
}

export interface FrameResult {
  frameIndex: number;
  /**
   * Clicked objects: every object of the session, in creation order. Concepts: the objects
   * shown on the frame, by id (docs/video-concepts.md).
   */
  objects: ObjectResult[];
  /** Concepts: new detections on this frame dropped by the object limit. */
  objectsDropped?: number;
}

/** A text concept of a session. */
export interface ConceptInfo {
  id: number;
  text: string;
}

export interface PromptRequest {
  frameIndex: number;
  prompts: readonly PromptInput[];
  /** null: a new object (the largest id + 1, from 1). */
  objId: number | null;
}

export interface PromptResult extends FrameResult {
  /** Clicks: the object the prompt went to. Text: the objects found on the frame. */
  objIds: number[];
  /** Text prompts: the concept of each text, in order. */
  concepts?: ConceptInfo[];
  /** The session tracks text concepts (its objects carry conceptId and trackerScore). */
  conceptSession: boolean;
}

export type PropagationDirection = 'forward' | 'backward' | 'both';

export interface PropagateRequest {
  direction: PropagationDirection;
  /** Default: the first frame holding a prompt of any object. */
  startFrameIndex?: number;
  /** Frames processed per direction; default: to the end of the video. */
  maxFrames?: number;
  /** Concepts: frames of hotstart delay before a frame is emitted; default: the bundle's. */
  hotstartDelay?: number;
}

export interface PropagateHooks {
  /** Checked before every frame; an aborted propagation stops before its next frame. */
  signal?: AbortSignal;
  /** Each frame in processing order; the next frame is computed once this settles. */
  onFrame(frame: FrameResult): void | Promise<void>;
}

export interface PropagationSummary {
  /** Frames processed (each once). */
  totalFrames: number;
  processingTimeMs: number;
  /** True when the caller's signal stopped it early (a close of the session rejects). */
  cancelled: boolean;
}

export type SessionStatus = 'ready' | 'propagating';

export interface SessionState {
  sessionId: string;
  status: SessionStatus;
  device: string;
  createdAt: Date;
  objectIds: number[];
  /** Text concepts with their objects (empty for clicked objects). */
  concepts: (ConceptInfo & { objectIds: number[] })[];
  /** Distinct frames with tracking results (prompted or propagated) since start or reset. */
  framesProcessed: number;
  totalFrames: number;
  /** Exact bytes the session holds in memory: its tracker's tensors plus decoded frames. */
  memoryBytes: number;
  videoInfo: VideoInfo;
}

export interface ClosedSession {
  sessionId: string;
  /** Bytes released by the close (tracker tensors plus decoded frames). */
  memoryFreedBytes: number;
}

export interface VideoLimits {
  maxFrames: number;
  maxPixels: number;
  maxDurationSeconds: number;
  /** Largest video file (downloads, base64), bytes. */
  maxBytes: number;
}

export interface VideoSessionsOptions {
  /** One engine per video device, keyed by device. */
  engines: ReadonlyMap<string, NativeEngine>;
  logger: Logger;
  maxSessions: number;
  sessionTimeoutMs: number;
  uploadDir: string;
  pathRoots: readonly string[];
  limits: VideoLimits;
  download: { timeoutMs: number; maxRedirects: number; allowedAddresses: readonly string[] };
  frameWindow: number;
  memoryFrames: number;
  maxObjects: number;
  /**
   * Concept tracking (text prompts), when the bundle has it: the tokenizer of the text
   * prompts, the bundle's hotstart delay, the official post-processing switch.
   */
  concepts: {
    tokenizer: PromptTokenizer;
    hotstartDelay: number;
    officialPostprocess: boolean;
  } | null;
  ffmpegPath: string;
  ffprobePath: string;
  /** Clock (ms) for idle times; tests may pass their own. */
  now?: () => number;
}

/** What a prompt asks of the tracker; `concept` (text prompts) comes with concept tracking. */
export type VideoPromptPlan =
  | {
      kind: 'object';
      /** Normalized [x, y] per click. */
      points: [number, number][];
      pointLabels: (0 | 1)[];
      box: NormalizedBox | null;
    }
  | { kind: 'concept'; concepts: VideoConceptPrompt[] };

/** One text of a video text prompt with its exemplar boxes on the prompt frame. */
export interface VideoConceptPrompt {
  text: string;
  boxes: NormalizedBox[];
  boxLabels: (0 | 1)[];
}

/**
 * Prompts of one video prompt request -> what to ask the tracker. With text prompts: concepts,
 * each with its exemplar boxes as in images (a box belongs to the text before it), the same
 * text twice one concept; clicks do not go with them. Otherwise all clicks of the request are
 * one object's clicks; at most one box (the object's box prompt) may go with them.
 */
export function planVideoPrompt(prompts: readonly PromptInput[]): VideoPromptPlan {
  if (prompts.some((p) => p.type === 'text')) return planVideoConcepts(prompts);
  const boxes = prompts.flatMap((p) => (p.type === 'box' ? [p.box] : []));
  if (boxes.length > 1) {
    throw new PromptPlanError(
      `/prompts: one object takes at most one box prompt (got ${boxes.length}); ` +
        'prompt other objects in their own requests',
    );
  }
  const points: [number, number][] = [];
  const pointLabels: (0 | 1)[] = [];
  prompts.forEach((prompt, index) => {
    if (prompt.type !== 'point') return;
    if (prompt.points.length !== prompt.point_labels.length) {
      throw new PromptPlanError(
        `/prompts/${index}: point_labels must have one label per point ` +
          `(${prompt.points.length} points, ${prompt.point_labels.length} labels)`,
      );
    }
    points.push(...prompt.points);
    pointLabels.push(...prompt.point_labels.map((l) => (l === 1 ? 1 : 0) as 0 | 1));
  });
  if (points.length > MAX_OBJECT_CLICKS) {
    throw new PromptPlanError(
      `/prompts: one object takes at most ${MAX_OBJECT_CLICKS} clicks per frame ` +
        `(got ${points.length})`,
    );
  }
  return { kind: 'object', points, pointLabels, box: boxes[0] ?? null };
}

function planVideoConcepts(prompts: readonly PromptInput[]): VideoPromptPlan {
  const clicks = prompts.findIndex((p) => p.type === 'point');
  if (clicks >= 0) {
    throw new PromptPlanError(
      `/prompts/${clicks}: in video, a text prompt takes exemplar boxes but no clicks; ` +
        'refine a found object with clicks and its obj_id afterwards',
    );
  }
  const byText = new Map<string, VideoConceptPrompt>();
  for (const query of planQueries(prompts)) {
    if (query.kind !== 'concept') continue;
    const concept = byText.get(query.text) ?? { text: query.text, boxes: [], boxLabels: [] };
    concept.boxes.push(...query.boxes);
    concept.boxLabels.push(...query.boxLabels);
    byText.set(query.text, concept);
  }
  return { kind: 'concept', concepts: [...byText.values()] };
}

/** The frames of a propagation in processing order, each with its direction. */
export function propagationOrder(
  totalFrames: number,
  start: number,
  direction: PropagationDirection,
  maxFrames: number = totalFrames,
): { frameIndex: number; reverse: boolean }[] {
  const order: { frameIndex: number; reverse: boolean }[] = [];
  const forward = (from: number): void => {
    for (let i = from; i < totalFrames && i < from + maxFrames; i += 1) {
      order.push({ frameIndex: i, reverse: false });
    }
  };
  const backward = (from: number): void => {
    for (let i = from; i >= 0 && i > from - maxFrames; i -= 1) {
      order.push({ frameIndex: i, reverse: true });
    }
  };
  if (direction === 'forward') forward(start);
  else if (direction === 'backward') backward(start);
  else {
    forward(start);
    backward(start - 1);
  }
  return order;
}

type Operation = 'prompt' | 'propagate' | 'remove' | 'reset';

/** The runs of a propagation order: maximal stretches in one direction. */
function runBoundaries(order: readonly { reverse: boolean }[]): { start: boolean; end: boolean }[] {
  return order.map((step, i) => ({
    start: i === 0 || order[i - 1].reverse !== step.reverse,
    end: i === order.length - 1 || order[i + 1].reverse !== step.reverse,
  }));
}

interface Session {
  readonly id: string;
  readonly device: string;
  readonly createdAt: Date;
  readonly info: VideoInfo;
  readonly tracker: NativeTracker;
  readonly frames: FrameSource;
  readonly input: VideoInput;
  lastUsed: number;
  operation: Operation | null;
  /** Settles when the running operation has finished (successfully or not). */
  running: Promise<void> | null;
  abort: AbortController | null;
  readonly processed: Set<number>;
  /** Text concepts by id (the tracker allocates the ids). */
  readonly concepts: Map<number, string>;
}

function toFrameResult(frame: TrackerFrame, width: number, height: number): FrameResult {
  const size: [number, number] = [height, width];
  return {
    frameIndex: frame.frameIndex,
    objects: frame.objects.map((object) => ({
      id: object.objId,
      mask: { size, counts: object.mask },
      box: object.box,
      score: object.score,
      present: object.present,
      ...(object.conceptId > 0
        ? { conceptId: object.conceptId, trackerScore: object.trackerScore }
        : {}),
    })),
    ...(frame.objectsDropped > 0 ? { objectsDropped: frame.objectsDropped } : {}),
  };
}

export class VideoSessions {
  private readonly sessions = new Map<string, Session>();
  /** Ids being started, with their device (they count against the limits). */
  private readonly starting = new Map<string, string>();
  private readonly now: () => number;
  private reaper: NodeJS.Timeout | null = null;
  private accepting = true;

  constructor(private readonly options: VideoSessionsOptions) {
    if (options.engines.size === 0) throw new Error('VideoSessions needs at least one device');
    this.now = options.now ?? Date.now;
  }

  /** Devices sessions may be placed on. */
  get devices(): string[] {
    return [...this.options.engines.keys()];
  }

  /** Open sessions (not counting those still starting). */
  get count(): number {
    return this.sessions.size;
  }

  /** Starts the idle reaper (unref'd: it never keeps the process alive). */
  init(): void {
    const period = Math.max(50, Math.min(this.options.sessionTimeoutMs / 4, 30_000));
    this.reaper = setInterval(() => this.reapIdle(), period);
    this.reaper.unref();
  }

  /** Executor tasks each video device's engine has completed (tests count frames computed). */
  tasksRun(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const [device, engine] of this.options.engines) counts[device] = engine.tasksRun();
    return counts;
  }

  /** Whether a session with this id is open. */
  has(sessionId: string): boolean {
    return this.sessions.has(sessionId);
  }

  /**
   * Throws what create() would for a full server (too_many_sessions) or one shutting down, so
   * that an upload can be refused before it is received.
   */
  assertCapacity(): void {
    if (!this.accepting) throw new VideoSessionError('not_ready', 'the server is shutting down');
    if (this.sessions.size + this.starting.size >= this.options.maxSessions) {
      throw new VideoSessionError(
        'too_many_sessions',
        `at most ${this.options.maxSessions} video sessions may be open at once ` +
          '(MAX_CONCURRENT_SESSIONS); close one or retry later',
        SESSION_RETRY_AFTER_SECONDS,
      );
    }
  }

  async create(request: CreateSessionRequest): Promise<CreatedSession> {
    let sessionId: string | null = null;
    let input: VideoInput | null = null;
    let frames: FrameSource | null = null;
    let tracker: NativeTracker | null = null;
    try {
      const device = this.admit(request);
      sessionId = request.sessionId ?? randomUUID();
      this.starting.set(sessionId, device);
      input = await this.openInput(request.source);
      const info = await probeVideo(input.file, {
        maxFrames: this.options.limits.maxFrames,
        maxPixels: this.options.limits.maxPixels,
        maxDurationSeconds: this.options.limits.maxDurationSeconds,
        ffprobePath: this.options.ffprobePath,
      });
      frames = await FrameSource.open(input.file, info, {
        windowFrames: this.options.frameWindow,
        ffmpegPath: this.options.ffmpegPath,
      });
      const engine = this.options.engines.get(device) as NativeEngine;
      tracker = engine.createTracker({
        numFrames: info.totalFrames,
        width: info.width,
        height: info.height,
        memoryFrames: this.options.memoryFrames,
        officialPostprocess: this.options.concepts?.officialPostprocess ?? true,
        maxObjects: this.options.maxObjects,
      });
      if (!this.accepting) throw new VideoSessionError('not_ready', 'the server is shutting down');
      this.sessions.set(sessionId, {
        id: sessionId,
        device,
        createdAt: new Date(this.now()),
        info,
        tracker,
        frames,
        input,
        lastUsed: this.now(),
        operation: null,
        running: null,
        abort: null,
        processed: new Set(),
        concepts: new Map(),
      });
      this.options.logger.info(`video session ${sessionId} started on ${device}`, {
        sessionId,
        device,
        frames: info.totalFrames,
        width: info.width,
        height: info.height,
      });
      return { sessionId, device, videoInfo: info };
    } catch (error) {
      tracker?.release();
      await frames?.close();
      if (input !== null) await input.dispose();
      // An upload is the session's from the call on, refused or not.
      else if (request.source.kind === 'upload') await rm(request.source.file, { force: true });
      throw error;
    } finally {
      if (sessionId !== null) this.starting.delete(sessionId);
    }
  }

  async prompt(sessionId: string, request: PromptRequest): Promise<PromptResult> {
    const session = this.get(sessionId);
    return this.exclusive(session, 'prompt', async () => {
      this.checkFrame(session, request.frameIndex, '/frame_index');
      const plan = planVideoPrompt(request.prompts);
      if (plan.kind === 'concept') return this.promptConcepts(session, request, plan.concepts);
      const known = session.tracker.objectIds();
      if (session.concepts.size > 0 && (request.objId === null || !known.includes(request.objId))) {
        throw new PromptPlanError(
          '/obj_id: this session tracks text concepts; clicks and boxes refine one of its ' +
            `objects (give its obj_id: ${known.join(', ') || 'none yet'}), new objects come ` +
            'from the text prompts',
        );
      }
      const objId = request.objId ?? (known.length === 0 ? 1 : Math.max(...known) + 1);
      if (!known.includes(objId) && known.length >= this.options.maxObjects) {
        throw new VideoSessionError(
          'too_many_objects',
          `the session already tracks ${known.length} objects, the most allowed ` +
            `(VIDEO_MAX_OBJECTS); remove one first`,
        );
      }
      const rgb = await session.frames.getFrame(request.frameIndex);
      const frame = await session.tracker.addPrompt(rgb, {
        frameIndex: request.frameIndex,
        objId,
        points: plan.points.flat(),
        pointLabels: plan.pointLabels,
        box: plan.box === null ? null : [...plan.box],
        // The request's clicks are the object's clicks on this frame: a refinement sends them
        // all again (and a box must come first, which only a fresh input list allows).
        clearOld: true,
      });
      session.processed.add(request.frameIndex);
      return {
        ...toFrameResult(frame, session.info.width, session.info.height),
        objIds: [objId],
        conceptSession: session.concepts.size > 0,
      };
    });
  }

  /** Text prompts on a frame: concept tracking starts or grows (docs/video-concepts.md). */
  private async promptConcepts(
    session: Session,
    request: PromptRequest,
    prompted: VideoConceptPrompt[],
  ): Promise<PromptResult> {
    const concepts = this.options.concepts;
    if (concepts === null) {
      throw new PromptPlanError(
        '/prompts: text prompts in video need a model bundle with concept tracking (bundle ' +
          'format 3, tools/export_sam3.py); this one tracks clicked objects only',
      );
    }
    if (request.objId !== null) {
      throw new PromptPlanError(
        '/obj_id: text prompts find their own objects; obj_id must be null with them',
      );
    }
    if (session.concepts.size === 0 && session.tracker.objectIds().length > 0) {
      throw new PromptPlanError(
        '/prompts: this session tracks objects created by clicks; text prompts need a session ' +
          'without them (reset it first, or start another session)',
      );
    }
    const unique = prompted.map((concept) => concept.text);
    const tokens = concepts.tokenizer.encodeBatch(unique);
    const L = concepts.tokenizer.contextLength;
    const rgb = await session.frames.getFrame(request.frameIndex);
    const { conceptIds, frame } = await session.tracker.addConcept(rgb, {
      frameIndex: request.frameIndex,
      texts: prompted.map(({ text, boxes, boxLabels }, row) => ({
        text,
        tokenIds: [...tokens.ids.subarray(row * L, (row + 1) * L)],
        attentionMask: [...tokens.mask.subarray(row * L, (row + 1) * L)],
        boxes: boxes.flat(),
        boxLabels,
      })),
    });
    conceptIds.forEach((id, row) => session.concepts.set(id, unique[row]));
    session.processed.add(request.frameIndex);
    const result = toFrameResult(frame, session.info.width, session.info.height);
    return {
      ...result,
      objIds: result.objects.map((object) => object.id),
      concepts: conceptIds.map((id, row) => ({ id, text: unique[row] })),
      conceptSession: true,
    };
  }

  async propagate(
    sessionId: string,
    request: PropagateRequest,
    hooks: PropagateHooks,
  ): Promise<PropagationSummary> {
    const session = this.get(sessionId);
    return this.exclusive(session, 'propagate', async (own) => {
      const { tracker, info } = session;
      if (tracker.objectIds().length === 0 && session.concepts.size === 0) {
        throw new PromptPlanError('the session has no objects: add one with a prompt first');
      }
      const defaultDelay = this.options.concepts?.hotstartDelay ?? 0;
      if (request.hotstartDelay !== undefined && request.hotstartDelay > defaultDelay) {
        throw new VideoSessionError(
          'invalid_request',
          `/hotstart_delay: at most ${defaultDelay} (the model's hotstart delay) ` +
            `(got ${request.hotstartDelay})`,
        );
      }
      let start = request.startFrameIndex;
      if (start === undefined) start = tracker.promptFrames()[0] ?? 0;
      else this.checkFrame(session, start, '/start_frame_index');
      const order = propagationOrder(info.totalFrames, start, request.direction, request.maxFrames);
      const started = performance.now();
      let processed = 0;
      const stopped = (): boolean => own.aborted || hooks.signal?.aborted === true;
      const runs = runBoundaries(order);
      for (const [i, { frameIndex, reverse }] of order.entries()) {
        if (stopped()) break;
        const rgb = await session.frames.getFrame(frameIndex);
        if (stopped()) break;
        const frames = await tracker.step(rgb, {
          frameIndex,
          reverse,
          hotstartDelay: request.hotstartDelay ?? null,
          runStart: runs[i].start,
          runEnd: runs[i].end,
        });
        processed += 1;
        // Concepts hold frames back for hotstart: a step emits none, one, or (at the end of
        // a run) every frame held.
        for (const frame of frames) {
          session.processed.add(frame.frameIndex);
          await hooks.onFrame(toFrameResult(frame, info.width, info.height));
        }
      }
      if (own.aborted && hooks.signal?.aborted !== true) {
        throw new VideoSessionError(
          'not_found',
          `video session ${session.id} was closed during the propagation`,
        );
      }
      return {
        totalFrames: processed,
        processingTimeMs: Math.round((performance.now() - started) * 10) / 10,
        cancelled: processed < order.length,
      };
    });
  }

  status(sessionId: string): SessionState {
    const session = this.get(sessionId);
    session.lastUsed = this.now();
    return this.describe(session);
  }

  list(): SessionState[] {
    return [...this.sessions.values()].map((session) => this.describe(session));
  }

  async removeObject(sessionId: string, objId: number): Promise<void> {
    const session = this.get(sessionId);
    await this.exclusive(session, 'remove', async () => {
      if (!(await session.tracker.removeObject(objId))) {
        throw new VideoSessionError('not_found', `session ${sessionId} has no object ${objId}`);
      }
    });
  }

  /** Removes a text concept and its objects; resolves with the ids removed. */
  async removeConcept(sessionId: string, conceptId: number): Promise<number[]> {
    const session = this.get(sessionId);
    return this.exclusive(session, 'remove', async () => {
      if (!session.concepts.has(conceptId)) {
        throw new VideoSessionError(
          'not_found',
          `session ${sessionId} has no concept ${conceptId}`,
        );
      }
      const removed = await session.tracker.removeConcept(conceptId);
      session.concepts.delete(conceptId);
      return removed;
    });
  }

  /** Clears every object and concept; returns how many objects there were. */
  async reset(sessionId: string): Promise<number> {
    const session = this.get(sessionId);
    return this.exclusive(session, 'reset', async () => {
      const cleared = await session.tracker.reset();
      session.processed.clear();
      session.concepts.clear();
      return cleared;
    });
  }

  /**
   * Closes a session: it is gone at once (later calls: not_found); a running operation is
   * cancelled and awaited, then the tracker, frames and files are released.
   */
  async close(sessionId: string): Promise<ClosedSession> {
    const session = this.get(sessionId);
    return { sessionId, memoryFreedBytes: await this.shut(session, 'closed') };
  }

  /** No new sessions from now on (shutdown). */
  stopAccepting(): void {
    this.accepting = false;
  }

  /** Closes every session and stops the reaper (shutdown). */
  async closeAll(): Promise<void> {
    this.accepting = false;
    if (this.reaper !== null) clearInterval(this.reaper);
    this.reaper = null;
    await Promise.all([...this.sessions.values()].map((s) => this.shut(s, 'shutdown')));
  }

  private admit(request: CreateSessionRequest): string {
    const configured = this.devices;
    const allowed = request.devices ?? configured;
    for (const device of allowed) {
      if (!this.options.engines.has(device)) {
        throw new VideoSessionError(
          'invalid_device',
          `device ${device} is not configured for video sessions (configured: ` +
            `${configured.join(', ')})`,
        );
      }
    }
    if (request.sessionId !== undefined) {
      const id = request.sessionId;
      if (this.sessions.has(id) || this.starting.has(id)) {
        throw new VideoSessionError('session_exists', `a session with id ${id} already exists`);
      }
    }
    this.assertCapacity();
    // The least loaded allowed device (open and starting sessions); ties go to the first.
    const load = new Map(allowed.map((device) => [device, 0]));
    for (const session of this.sessions.values()) {
      if (load.has(session.device)) load.set(session.device, (load.get(session.device) ?? 0) + 1);
    }
    for (const device of this.starting.values()) {
      if (load.has(device)) load.set(device, (load.get(device) ?? 0) + 1);
    }
    let best = allowed[0];
    for (const device of allowed) {
      if ((load.get(device) ?? 0) < (load.get(best) ?? 0)) best = device;
    }
    return best;
  }

  private async openInput(source: VideoSource): Promise<VideoInput> {
    const { uploadDir, pathRoots, limits, download } = this.options;
    switch (source.kind) {
      case 'upload':
        return openVideoInput({ kind: 'file', file: source.file, uploadDir });
      case 'base64':
        return openVideoInput({
          kind: 'base64',
          data: source.data,
          uploadDir,
          maxBytes: limits.maxBytes,
        });
      case 'path':
        return openVideoInput({ kind: 'path', path: source.path, roots: pathRoots });
      case 'url': {
        const input = await openVideoInput({ kind: 'empty', uploadDir });
        try {
          await downloadVideo(source.url, input.file, {
            maxBytes: limits.maxBytes,
            timeoutMs: download.timeoutMs,
            maxRedirects: download.maxRedirects,
            allowedAddresses: download.allowedAddresses,
          });
          return input;
        } catch (error) {
          await input.dispose();
          throw error;
        }
      }
    }
  }

  private get(sessionId: string): Session {
    const session = this.sessions.get(sessionId);
    if (session === undefined) {
      throw new VideoSessionError('not_found', `no video session ${sessionId}`);
    }
    return session;
  }

  private checkFrame(session: Session, frameIndex: number, field: string): void {
    const total = session.info.totalFrames;
    if (frameIndex >= total) {
      throw new VideoSessionError(
        'invalid_request',
        `${field}: frame ${frameIndex} is out of range (the video has ${total} frames, 0 to ` +
          `${total - 1})`,
      );
    }
  }

  /** Runs `work` as the session's one operation; refuses (busy) while another runs. */
  private async exclusive<T>(
    session: Session,
    operation: Operation,
    work: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    if (session.operation !== null) {
      throw new VideoSessionError(
        'session_busy',
        `session ${session.id} is busy (${session.operation === 'propagate' ? 'propagating' : `a ${session.operation} is running`}); retry when it is done`,
      );
    }
    const controller = new AbortController();
    session.operation = operation;
    session.abort = controller;
    const result = work(controller.signal);
    session.running = result.then(
      () => undefined,
      () => undefined,
    );
    try {
      return await result;
    } finally {
      session.operation = null;
      session.abort = null;
      session.running = null;
      session.lastUsed = this.now();
    }
  }

  private describe(session: Session): SessionState {
    return {
      sessionId: session.id,
      status: session.operation === 'propagate' ? 'propagating' : 'ready',
      device: session.device,
      createdAt: session.createdAt,
      objectIds: session.tracker.objectIds(),
      concepts: this.conceptsOf(session),
      framesProcessed: session.processed.size,
      totalFrames: session.info.totalFrames,
      memoryBytes: session.tracker.byteSize() + session.frames.byteSize,
      videoInfo: session.info,
    };
  }

  private conceptsOf(session: Session): SessionState['concepts'] {
    const ids = session.tracker.objectIds();
    const conceptOf = session.tracker.objectConcepts();
    return [...session.concepts].map(([id, text]) => ({
      id,
      text,
      objectIds: ids.filter((_, i) => conceptOf[i] === id),
    }));
  }

  /** Removes the session now, cancels and awaits its operation, releases everything. */
  private async shut(session: Session, why: string): Promise<number> {
    if (this.sessions.get(session.id) !== session) return 0;
    this.sessions.delete(session.id);
    session.abort?.abort();
    await session.running;
    const bytes = session.tracker.byteSize() + session.frames.byteSize;
    session.tracker.release();
    try {
      await session.frames.close();
    } finally {
      await session.input.dispose();
    }
    this.options.logger.info(`video session ${session.id} ${why}`, {
      sessionId: session.id,
      memoryFreedBytes: bytes,
    });
    return bytes;
  }

  private reapIdle(): void {
    const now = this.now();
    for (const session of this.sessions.values()) {
      if (session.operation !== null) continue;
      if (now - session.lastUsed <= this.options.sessionTimeoutMs) continue;
      this.shut(
        session,
        `closed after ${Math.round((now - session.lastUsed) / 1000)} s idle`,
      ).catch((error: unknown) =>
        this.options.logger.error(`closing idle session ${session.id} failed`, {
          error: String(error),
        }),
      );
    }
  }
}
