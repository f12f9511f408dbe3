/**
 * FrameSource: frame i of a probed local video as RGB24 (width * height * 3 bytes, row-major),
 * decoded on demand by ffmpeg child processes, with a bounded window of decoded frames.
 *
 * - Frame i is the i-th frame of a full sequential decode (`-vsync passthrough`: no frame
 *   dropped or duplicated). Any other frame is reached by an accurate seek to a time between
 *   its presentation time and the previous frame's (probe.ts FrameTimeline).
 * - Forward reads (propagation) are served by one long-lived decoder that is read as it goes;
 *   the pipe's backpressure keeps it from decoding ahead of the reader.
 * - A read behind the last one (backward propagation) decodes the chunk of frames that ends at
 *   it, forward from a seek, into the window; the frames before it are then served from there.
 * - A jump forward starts a new long-lived decoder at the frame.
 * - The window keeps at most `windowFrames` frames, least recently used out first, so memory
 *   does not grow with the video's length.
 * - ffmpeg reads the local file only: `-protocol_whitelist file`, the probed demuxer forced
 *   with `-f` (and the same demuxer allowlist as the probe), `-nostdin`.
 * - A decoder that crashes, stalls, is killed or runs out of data fails that call with a
 *   VideoInputError; the next call starts a fresh decoder. `close()` kills every child.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { VideoInputError, VideoToolError } from './errors';
import { DEMUXER_WHITELIST, decoderPixelCap, type VideoInfo } from './probe';

export interface FrameSourceOptions {
  /** Decoded frames kept in memory (VIDEO_FRAME_WINDOW). */
  windowFrames: number;
  /** The ffmpeg executable (default: `ffmpeg` on PATH). */
  ffmpegPath?: string;
  /** Frames decoded per backward seek (default and at most: windowFrames). */
  chunkFrames?: number;
  /** A decoder that produces no frame for this long is killed and the call fails, ms. */
  stallTimeoutMs?: number;
  /** Decode frame 0 in open() and refuse a video that yields none (default true). */
  verifyFirstFrame?: boolean;
}

export interface FrameSourceStats {
  /** ffmpeg processes started since open. */
  decodersStarted: number;
  /** ffmpeg processes running now. */
  liveDecoders: number;
  /** Frames read from decoders since open (a frame decoded twice counts twice). */
  framesDecoded: number;
  /** Frames in the window now, and their bytes. */
  framesHeld: number;
  bytesHeld: number;
}

const DEFAULT_STALL_TIMEOUT_MS = 30_000;
const STDERR_TAIL_BYTES = 8192;

type DecoderProcess = ChildProcessByStdio<null, Readable, Readable>;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One ffmpeg child writing frames [start, end) as raw RGB24 to its stdout. */
class Decoder {
  /** Index of the next frame it will output. */
  next: number;
  /** Settles when the process has exited and its pipes are closed. */
  readonly exited: Promise<Exit>;
  killed = false;
  private readonly child: DecoderProcess;
  private stderrTail = '';
  private eof = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(
    executable: string,
    args: readonly string[],
    start: number,
    readonly end: number,
    private readonly frameBytes: number,
  ) {
    this.next = start;
    this.child = spawn(executable, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let resolveExit: (exit: Exit) => void = () => undefined;
    this.exited = new Promise((resolve) => (resolveExit = resolve));
    this.child.on('close', (code, signal) => {
      this.eof = true;
      this.notify();
      resolveExit({ code, signal });
    });
    this.child.on('error', (error) => {
      this.failure = new VideoToolError(
        `ffmpeg (${executable}) could not be run: ${error.message}`,
        {
          cause: error,
        },
      );
      this.notify();
      // A process that never started has nothing to wait for.
      if (this.child.pid === undefined) resolveExit({ code: null, signal: null });
    });
    const stdout = this.child.stdout;
    stdout.on('readable', () => this.notify());
    const ended = (): void => {
      this.eof = true;
      this.notify();
    };
    stdout.on('end', ended);
    stdout.on('close', ended);
    // A pipe error (the child killed mid-write) ends the data like EOF does; the exit status
    // then says what happened.
    stdout.on('error', ended);
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (text: string) => {
      this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL_BYTES);
    });
    this.child.stderr.on('error', () => undefined);
  }

  get stderr(): string {
    return this.stderrTail;
  }

  /** The next frame, or null when the decoder has no more (see `exited` for why). */
  async read(stallTimeoutMs: number): Promise<Buffer | null> {
    const deadline = Date.now() + stallTimeoutMs;
    for (;;) {
      if (this.failure !== null) throw this.failure;
      const chunk = this.child.stdout.read(this.frameBytes) as Buffer | null;
      if (chunk !== null) {
        // Less than a frame is only ever returned at the end of the data: a cut-off frame.
        if (chunk.length < this.frameBytes) return null;
        this.next += 1;
        // A small frame may be a view into a larger pipe chunk: copy so that the window holds
        // exactly its own bytes.
        return chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.length
          ? chunk
          : Buffer.from(chunk);
      }
      if (this.eof) return null;
      const left = deadline - Date.now();
      if (left <= 0 || !(await this.waitForData(left))) {
        this.kill();
        throw new VideoInputError(
          'invalid_video',
          `decoding frame ${this.next} took longer than ${stallTimeoutMs / 1000} s`,
          { detail: this.stderrTail },
        );
      }
    }
  }

  kill(): void {
    if (this.killed) return;
    this.killed = true;
    this.child.kill('SIGKILL');
    // Unread frames left in the pipe would keep its end (and so 'close') from ever coming.
    this.child.stdout.destroy();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** True when something happened (data, end, error), false when `ms` passed first. */
  private waitForData(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve(false);
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
  }
}

export class FrameSource {
  private readonly window = new Map<number, Buffer>();
  private readonly live = new Set<Decoder>();
  private readonly frameBytes: number;
  private readonly executable: string;
  private readonly url: string;
  private readonly chunkFrames: number;
  private readonly stallTimeoutMs: number;
  private sequential: Decoder | null = null;
  /** The frame asked for last: a read behind it is a backward read. */
  private last: number | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private closing: Promise<void> | null = null;
  private counters = { decodersStarted: 0, framesDecoded: 0, bytesHeld: 0 };

  private constructor(
    file: string,
    readonly info: VideoInfo,
    private readonly windowFrames: number,
    options: FrameSourceOptions,
  ) {
    this.frameBytes = info.width * info.height * 3;
    this.executable = options.ffmpegPath ?? 'ffmpeg';
    this.url = `file:${path.resolve(file)}`;
    this.chunkFrames = Math.max(1, Math.min(options.chunkFrames ?? windowFrames, windowFrames));
    this.stallTimeoutMs = options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
  }

  /**
   * A frame source over `file` as probed into `info`. Unless `verifyFirstFrame` is false, it
   * decodes frame 0 first: a video whose decoder yields no frame is refused here with
   * `no_decodable_frames`, before the session allocates anything else.
   */
  static async open(
    file: string,
    info: VideoInfo,
    options: FrameSourceOptions,
  ): Promise<FrameSource> {
    if (!Number.isInteger(options.windowFrames) || options.windowFrames < 1) {
      throw new RangeError(`windowFrames must be a positive integer, got ${options.windowFrames}`);
    }
    const source = new FrameSource(file, info, options.windowFrames, options);
    if (options.verifyFirstFrame === false) return source;
    try {
      await source.getFrame(0);
    } catch (error) {
      await source.close();
      if (error instanceof VideoInputError && error.code === 'invalid_video') {
        throw new VideoInputError('no_decodable_frames', 'no frame of the video could be decoded', {
          cause: error,
          detail: error.detail,
        });
      }
      throw error;
    }
    return source;
  }

  get totalFrames(): number {
    return this.info.totalFrames;
  }

  /** Bytes of decoded frames held now. */
  get byteSize(): number {
    return this.counters.bytesHeld;
  }

  stats(): FrameSourceStats {
    return {
      decodersStarted: this.counters.decodersStarted,
      liveDecoders: this.live.size,
      framesDecoded: this.counters.framesDecoded,
      framesHeld: this.window.size,
      bytesHeld: this.counters.bytesHeld,
    };
  }

  /**
   * Frame `index` (0 <= index < totalFrames) as RGB24. The buffer is shared with the window:
   * read it, do not write to it. Calls run one at a time, in call order.
   */
  getFrame(index: number): Promise<Buffer> {
    if (!Number.isInteger(index) || index < 0 || index >= this.info.totalFrames) {
      return Promise.reject(
        new RangeError(`frame ${index} is outside [0, ${this.info.totalFrames})`),
      );
    }
    const run = this.queue.then(() => this.fetch(index));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Kills every decoder, frees the window; later calls fail. Resolves once children exited. */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.closed = true;
    for (const decoder of this.live) decoder.kill();
    const exits = [...this.live].map((decoder) => decoder.exited);
    this.sequential = null;
    this.window.clear();
    this.counters.bytesHeld = 0;
    this.closing = Promise.all(exits).then(() => undefined);
    return this.closing;
  }

  private closedError(): VideoInputError {
    return new VideoInputError('not_found', 'the video session was closed');
  }

  private async fetch(index: number): Promise<Buffer> {
    if (this.closed) throw this.closedError();
    const cached = this.window.get(index);
    if (cached !== undefined) {
      this.window.delete(index);
      this.window.set(index, cached);
      this.last = index;
      return cached;
    }
    let frame: Buffer;
    const sequential = this.sequential;
    if (
      sequential !== null &&
      sequential.next <= index &&
      index < sequential.next + this.windowFrames
    ) {
      frame = await this.readSequential(sequential, index);
    } else if (this.last !== null && index < this.last) {
      const start = Math.max(0, index - this.chunkFrames + 1);
      const chunk = this.startDecoder(start, index + 1);
      try {
        frame = await this.readUntil(chunk, index);
      } finally {
        chunk.kill();
      }
    } else {
      this.sequential?.kill();
      this.sequential = this.startDecoder(index, this.info.totalFrames);
      frame = await this.readSequential(this.sequential, index);
    }
    this.last = index;
    return frame;
  }

  private async readSequential(decoder: Decoder, index: number): Promise<Buffer> {
    try {
      return await this.readUntil(decoder, index);
    } catch (error) {
      decoder.kill();
      if (this.sequential === decoder) this.sequential = null;
      throw error;
    }
  }

  /** Reads frames into the window until frame `index` comes. */
  private async readUntil(decoder: Decoder, index: number): Promise<Buffer> {
    for (;;) {
      const position = decoder.next;
      const frame = await decoder.read(this.stallTimeoutMs);
      if (this.closed) throw this.closedError();
      if (frame === null) throw await this.decoderEnded(decoder, position);
      this.counters.framesDecoded += 1;
      this.store(position, frame);
      if (position === index) return frame;
    }
  }

  /** Why a decoder gave no frame `position`. */
  private async decoderEnded(decoder: Decoder, position: number): Promise<Error> {
    const exit = await decoder.exited;
    if (this.closed) return this.closedError();
    const detail = `ffmpeg exit ${exit.code ?? exit.signal}: ${decoder.stderr}`;
    if (exit.code === 0) {
      return new VideoInputError(
        'invalid_video',
        position === 0
          ? 'the video has no decodable frame'
          : `frame ${position} could not be decoded: the video's data ends after frame ${position - 1}`,
        { detail },
      );
    }
    return new VideoInputError('invalid_video', `the video decoder failed at frame ${position}`, {
      detail,
    });
  }

  private store(index: number, frame: Buffer): void {
    const previous = this.window.get(index);
    if (previous !== undefined) {
      this.window.delete(index);
      this.counters.bytesHeld -= previous.length;
    }
    this.window.set(index, frame);
    this.counters.bytesHeld += frame.length;
    while (this.window.size > this.windowFrames) {
      const [oldest, evicted] = this.window.entries().next().value as [number, Buffer];
      this.window.delete(oldest);
      this.counters.bytesHeld -= evicted.length;
    }
  }

  /** An ffmpeg child decoding frames [start, end). */
  private startDecoder(start: number, end: number): Decoder {
    const { info } = this;
    const seek =
      start > 0 ? ['-seek_timestamp', '1', '-ss', info.timeline.seekSeconds(start).toFixed(6)] : [];
    const limit = end < info.totalFrames ? ['-frames:v', String(end - start)] : [];
    const args = [
      '-nostdin',
      '-hide_banner',
      '-v',
      'error',
      '-protocol_whitelist',
      'file',
      '-format_whitelist',
      DEMUXER_WHITELIST,
      '-f',
      info.format,
      // The decoder refuses frames far larger than the probed size (a stream growing mid-way).
      '-max_pixels',
      String(decoderPixelCap(info.width * info.height)),
      ...seek,
      '-i',
      this.url,
      '-map',
      `0:${info.streamIndex}`,
      '-an',
      '-sn',
      '-dn',
      '-vsync',
      'passthrough',
      ...limit,
      // Every frame at the probed size, whatever the stream does mid-way.
      '-vf',
      `scale=${info.width}:${info.height}`,
      '-pix_fmt',
      'rgb24',
      '-f',
      'rawvideo',
      'pipe:1',
    ];
    const decoder = new Decoder(this.executable, args, start, end, this.frameBytes);
    this.counters.decodersStarted += 1;
    this.live.add(decoder);
    void decoder.exited.then(() => this.live.delete(decoder));
    return decoder;
  }
}
