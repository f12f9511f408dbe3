/**
 * ffprobe on an untrusted local video file -> VideoInfo, with the limits (frames, pixels per
 * frame, seconds) checked from the probe alone, before any frame is decoded for a session.
 *
 * Two ffprobe runs, both reading local files only (`-protocol_whitelist file`) through an
 * allowlist of demuxers (`-format_whitelist`: a playlist (HLS), concat script or any other
 * format is refused by libavformat after it recognises the format and before that demuxer
 * reads a byte of the file as its own input):
 * 1. the container header (streams, format): what the file declares. A declared frame count,
 *    size or duration over the limits is refused here. ffprobe may decode a frame to learn a
 *    stream's parameters, so it runs with `-max_pixels`: a header declaring 16K x 16K makes it
 *    fail with that size instead of allocating gigabytes, and we report the size.
 * 2. the packet index of the chosen video stream (demuxing only, no decoding): the exact
 *    number of frames a full decode gives (packets the demuxer marks as discarded by an edit
 *    list do not count) and each frame's presentation time, which frame-accurate seeking needs.
 *    A file that declares nothing (a WebM without a duration) is bounded here: the scan stops
 *    at `maxFrames + 1` packets.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { VideoInputError, VideoToolError } from './errors';

/** Demuxers accepted for client files, by the name ffmpeg's `-f` takes. */
export const ACCEPTED_DEMUXERS = ['mov', 'matroska', 'avi'] as const;
export type AcceptedDemuxer = (typeof ACCEPTED_DEMUXERS)[number];
/** For `-format_whitelist`: libavformat matches any name of a demuxer's comma list. */
export const DEMUXER_WHITELIST = ACCEPTED_DEMUXERS.join(',');
const ACCEPTED_DESCRIPTION = 'MP4/MOV, Matroska/WebM or AVI';

export interface ProbeOptions {
  /** Most frames a video may have. */
  maxFrames: number;
  /** Most pixels (width x height) per frame. */
  maxPixels: number;
  /** Longest video, seconds. */
  maxDurationSeconds: number;
  /** The ffprobe executable (default: `ffprobe` on PATH). */
  ffprobePath?: string;
  /** Time allowed for each ffprobe run, ms (default 30 s). */
  timeoutMs?: number;
}

/**
 * Presentation times of a video stream's frames, in decode-output order (ascending), as
 * integer ticks of the stream's time base. Frame i of a full sequential decode is the frame
 * whose time is `ticks[i]`.
 */
export class FrameTimeline {
  constructor(
    private readonly ticks: Float64Array,
    /** Seconds per tick: the stream time base as [numerator, denominator]. */
    private readonly timeBase: readonly [number, number],
  ) {}

  get length(): number {
    return this.ticks.length;
  }

  /** Presentation time of frame i, seconds. */
  seconds(index: number): number {
    return ((this.ticks[index] ?? Number.NaN) * this.timeBase[0]) / this.timeBase[1];
  }

  /**
   * Where ffmpeg's accurate input seek (`-seek_timestamp 1 -ss T`, which keeps decoded frames
   * with time >= T) must aim so that the first frame it outputs is frame `index` (> 0): half
   * way between that frame's time and the previous one's, far from both in any rounding.
   */
  seekSeconds(index: number): number {
    const before = this.ticks[index - 1] ?? Number.NaN;
    const at = this.ticks[index] ?? Number.NaN;
    return ((before + at) * this.timeBase[0]) / (2 * this.timeBase[1]);
  }

  /** A timeline is an implementation detail of seeking; logs and responses see its size. */
  toJSON(): { frames: number } {
    return { frames: this.ticks.length };
  }
}

export interface VideoInfo {
  /** Frames a full decode of the video stream gives. */
  totalFrames: number;
  /** Average frame rate, frames per second (0 when the file gives no way to tell). */
  fps: number;
  /** Size of the decoded frames, pixels, after the display rotation is applied. */
  width: number;
  height: number;
  durationSeconds: number;
  /** ffprobe's codec name of the video stream (h264, vp9, ffv1, ...). */
  codec: string;
  /** The demuxer, as ffmpeg's `-f` takes it. */
  format: AcceptedDemuxer;
  /** Index of the video stream in the container (`-map 0:<index>`). */
  streamIndex: number;
  timeline: FrameTimeline;
}

interface ProbeStream {
  index?: number;
  codec_type?: string;
  codec_name?: string;
  width?: number;
  height?: number;
  avg_frame_rate?: string;
  r_frame_rate?: string;
  time_base?: string;
  nb_frames?: string;
  duration?: string;
  disposition?: { attached_pic?: number };
  side_data_list?: { rotation?: number }[];
  tags?: { rotate?: string };
}

interface ProbeFormat {
  format_name?: string;
  duration?: string;
}

interface ProbeHeader {
  streams?: ProbeStream[];
  format?: ProbeFormat;
}

const DEFAULT_TIMEOUT_MS = 30_000;
/** A header's JSON is a few KiB; a file with thousands of streams or tags is refused. */
const MAX_HEADER_JSON_BYTES = 4 * 1024 * 1024;
const STDERR_TAIL_BYTES = 8192;

interface ToolRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** The run was stopped because `onLine` asked it to. */
  stopped: boolean;
  stdout: string;
  stderr: string;
}

/**
 * Runs ffprobe with an argument array (no shell) and a deadline. With `onLine`, stdout is
 * handed over line by line (and not kept); `onLine` returning false stops the run.
 */
function runFfprobe(
  executable: string,
  args: readonly string[],
  timeoutMs: number,
  maxStdoutBytes: number,
  onLine?: (line: string) => boolean,
): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(executable, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stdoutBytes = 0;
    let pending = '';
    let stderr = '';
    let timedOut = false;
    let stopped = false;
    const stop = (): void => {
      stopped = true;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      if (stopped) return;
      if (onLine === undefined) {
        stdoutBytes += Buffer.byteLength(text);
        if (stdoutBytes > maxStdoutBytes) stop();
        else stdout += text;
        return;
      }
      const lines = (pending + text).split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        if (!onLine(line)) {
          stop();
          return;
        }
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      stderr = (stderr + text).slice(-STDERR_TAIL_BYTES);
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(
        new VideoToolError(`ffprobe (${executable}) could not be run: ${error.message}`, {
          cause: error,
        }),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (!stopped && onLine !== undefined && pending !== '') stopped = !onLine(pending);
      resolve({ code, signal, timedOut, stopped, stdout, stderr });
    });
  });
}

function inputUrl(file: string): string {
  // "file:" keeps a name like "concat:x" or "pipe:0" from being read as another protocol.
  return `file:${path.resolve(file)}`;
}

/**
 * The `-max_pixels` given to libavcodec for frames of up to `pixels` pixels. Decoders allocate
 * aligned, padded pictures (a 32x24 FFV1 frame asks for 64x24), so the cap has headroom: it is
 * there to stop a gigapixel allocation, while the exact limit is checked on the probe's size.
 */
export function decoderPixelCap(pixels: number): number {
  return 2 * pixels + (1 << 20);
}

function commonArgs(maxPixels: number): string[] {
  return [
    '-v',
    'error',
    '-hide_banner',
    '-protocol_whitelist',
    'file',
    '-format_whitelist',
    DEMUXER_WHITELIST,
    '-max_pixels',
    String(decoderPixelCap(maxPixels)),
  ];
}

function limitError(message: string): VideoInputError {
  return new VideoInputError('video_limits_exceeded', message);
}

/** What a failed header probe means, from ffprobe's stderr; the message names no path. */
function headerFailure(run: ToolRun, options: ProbeOptions, timeoutMs: number): VideoInputError {
  const detail = run.stderr;
  if (run.timedOut) {
    return new VideoInputError(
      'invalid_video',
      `reading the video's header took longer than ${timeoutMs / 1000} s`,
      { detail },
    );
  }
  const size = /Picture size (\d+)x(\d+) (?:is invalid|exceeds)/.exec(run.stderr);
  if (size !== null) {
    const width = Number(size[1]);
    const height = Number(size[2]);
    return limitError(
      `the video's frames are ${width}x${height} (${width * height} pixels); the limit is ` +
        `${options.maxPixels} pixels per frame`,
    );
  }
  const refused = /\[([\w,]+) @ [^\]]*\] Format not on whitelist/.exec(run.stderr);
  if (refused !== null) {
    const name = (refused[1] ?? '').split(',')[0];
    return new VideoInputError(
      'invalid_video',
      `the container format ${name} is not accepted; send ${ACCEPTED_DESCRIPTION}`,
      { detail },
    );
  }
  return new VideoInputError(
    'invalid_video',
    `the file is not a video this server can read (${ACCEPTED_DESCRIPTION})`,
    { detail },
  );
}

function parseRational(text: string | undefined): [number, number] | null {
  const match = /^(\d+)\/(\d+)$/.exec(text ?? '');
  if (match === null) return null;
  const numerator = Number(match[1]);
  const denominator = Number(match[2]);
  return numerator > 0 && denominator > 0 ? [numerator, denominator] : null;
}

function parseNonNegative(text: string | undefined): number | null {
  if (text === undefined || !/^\d+(\.\d*)?$/.test(text)) return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : null;
}

/** The stream's display rotation in degrees (side data in ffmpeg >= 5, a tag before). */
function rotationOf(stream: ProbeStream): number {
  const fromSideData = stream.side_data_list?.find((entry) => typeof entry.rotation === 'number');
  const degrees = fromSideData?.rotation ?? Number(stream.tags?.rotate ?? 0);
  return Number.isFinite(degrees) ? degrees : 0;
}

function acceptedDemuxer(formatName: string | undefined): AcceptedDemuxer | null {
  const first = (formatName ?? '').split(',')[0];
  return ACCEPTED_DEMUXERS.find((name) => name === first) ?? null;
}

interface PacketScan {
  ticks: Float64Array;
  /** More than maxFrames frames: the scan stopped there. */
  overLimit: boolean;
}

/** Reads the stream's packet timestamps (demuxing only), at most maxFrames + 1 of them. */
async function scanPackets(
  url: string,
  format: AcceptedDemuxer,
  streamIndex: number,
  options: ProbeOptions,
  executable: string,
  timeoutMs: number,
): Promise<PacketScan> {
  const ticks: number[] = [];
  let malformed = false;
  const run = await runFfprobe(
    executable,
    [
      ...commonArgs(options.maxPixels),
      '-f',
      format,
      '-select_streams',
      String(streamIndex),
      '-show_entries',
      'packet=pts,dts,flags',
      '-of',
      'compact=p=0',
      url,
    ],
    timeoutMs,
    0,
    (line) => {
      if (line === '') return true;
      const fields = new Map(
        line.split('|').map((pair) => {
          const equals = pair.indexOf('=');
          return [pair.slice(0, equals), pair.slice(equals + 1)] as const;
        }),
      );
      // D: a packet an edit list tells the decoder to decode but not to output.
      if ((fields.get('flags') ?? '').includes('D')) return true;
      const pts = fields.get('pts');
      const time = pts !== undefined && pts !== 'N/A' ? pts : fields.get('dts');
      if (time === undefined || !/^-?\d+$/.test(time)) {
        malformed = true;
        return false;
      }
      ticks.push(Number(time));
      return ticks.length <= options.maxFrames;
    },
  );
  if (run.timedOut) {
    throw new VideoInputError(
      'invalid_video',
      `indexing the video's frames took longer than ${timeoutMs / 1000} s`,
      { detail: run.stderr },
    );
  }
  if (malformed) {
    throw new VideoInputError('invalid_video', 'the video has frames without timestamps', {
      detail: run.stderr,
    });
  }
  // A non-zero exit after some packets (a truncated file) keeps the frames read so far: the
  // decoder reports the first frame it cannot produce, when it is asked for.
  ticks.sort((a, b) => a - b);
  return { ticks: Float64Array.from(ticks), overLimit: ticks.length > options.maxFrames };
}

/**
 * Probes `file` (a local file) and checks it against the limits. Throws VideoInputError:
 * `invalid_video` (not a readable container of an accepted format), `no_decodable_frames` (no
 * video stream, no frames, an unknown codec), `video_limits_exceeded` (naming the limit).
 */
export async function probeVideo(file: string, options: ProbeOptions): Promise<VideoInfo> {
  const executable = options.ffprobePath ?? 'ffprobe';
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const url = inputUrl(file);
  const run = await runFfprobe(
    executable,
    [...commonArgs(options.maxPixels), '-show_format', '-show_streams', '-of', 'json', url],
    timeoutMs,
    MAX_HEADER_JSON_BYTES,
  );
  if (run.stopped) {
    throw new VideoInputError('invalid_video', 'the video declares too many streams or tags');
  }
  if (run.code !== 0) throw headerFailure(run, options, timeoutMs);

  let header: ProbeHeader;
  try {
    header = JSON.parse(run.stdout) as ProbeHeader;
  } catch (error) {
    throw new VideoInputError('invalid_video', 'the video header could not be read', {
      cause: error,
    });
  }
  const format = acceptedDemuxer(header.format?.format_name);
  if (format === null) {
    throw new VideoInputError(
      'invalid_video',
      `the container format is not ${ACCEPTED_DESCRIPTION}`,
    );
  }
  const stream = (header.streams ?? []).find(
    (candidate) => candidate.codec_type === 'video' && candidate.disposition?.attached_pic !== 1,
  );
  if (stream === undefined || typeof stream.index !== 'number') {
    throw new VideoInputError('no_decodable_frames', 'the file has no video stream');
  }
  const codec = stream.codec_name;
  if (codec === undefined || codec === 'unknown' || codec === 'none') {
    throw new VideoInputError(
      'no_decodable_frames',
      'the video stream is in a codec this server cannot decode',
    );
  }
  const codedWidth = stream.width ?? 0;
  const codedHeight = stream.height ?? 0;
  if (!(codedWidth > 0 && codedHeight > 0)) {
    throw new VideoInputError('no_decodable_frames', 'the video stream declares no frame size');
  }
  const pixels = codedWidth * codedHeight;
  if (pixels > options.maxPixels) {
    throw limitError(
      `the video's frames are ${codedWidth}x${codedHeight} (${pixels} pixels); the limit is ` +
        `${options.maxPixels} pixels per frame`,
    );
  }
  const declaredFrames = parseNonNegative(stream.nb_frames);
  if (declaredFrames !== null && declaredFrames > options.maxFrames) {
    throw limitError(
      `the video declares ${declaredFrames} frames; the limit is ${options.maxFrames} frames`,
    );
  }
  const streamDuration = parseNonNegative(stream.duration);
  const formatDuration = parseNonNegative(header.format?.duration);
  const declaredDuration = streamDuration ?? formatDuration;
  if (declaredDuration !== null && declaredDuration > options.maxDurationSeconds) {
    throw limitError(
      `the video declares ${declaredDuration} s; the limit is ${options.maxDurationSeconds} s`,
    );
  }
  const timeBase = parseRational(stream.time_base);
  if (timeBase === null) {
    throw new VideoInputError('invalid_video', 'the video stream has no valid time base');
  }

  const scan = await scanPackets(url, format, stream.index, options, executable, timeoutMs);
  if (scan.overLimit) {
    throw limitError(`the video has more than ${options.maxFrames} frames (the limit)`);
  }
  const totalFrames = scan.ticks.length;
  if (totalFrames === 0)
    throw new VideoInputError('no_decodable_frames', 'the video has no frames');
  const timeline = new FrameTimeline(scan.ticks, timeBase);

  const rate = parseRational(stream.avg_frame_rate) ?? parseRational(stream.r_frame_rate);
  const span = timeline.seconds(totalFrames - 1) - timeline.seconds(0);
  let fps = rate !== null ? rate[0] / rate[1] : 0;
  if (fps === 0 && span > 0) fps = (totalFrames - 1) / span;
  // The stream's own duration, else its frames' span: a container's duration may include
  // other streams and (Matroska) the start offset.
  const durationSeconds =
    streamDuration ?? (fps > 0 ? Math.round((span + 1 / fps) * 1e6) / 1e6 : (formatDuration ?? 0));
  if (durationSeconds > options.maxDurationSeconds) {
    throw limitError(
      `the video lasts ${durationSeconds} s; the limit is ${options.maxDurationSeconds} s`,
    );
  }
  const quarterTurns = Math.round(rotationOf(stream) / 90);
  const swap = Math.abs(quarterTurns) % 2 === 1;
  return {
    totalFrames,
    fps,
    width: swap ? codedHeight : codedWidth,
    height: swap ? codedWidth : codedHeight,
    durationSeconds,
    codec,
    format,
    streamIndex: stream.index,
    timeline,
  };
}
