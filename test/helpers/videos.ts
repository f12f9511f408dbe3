/**
 * Synthetic test videos, written with the real ffmpeg: well-formed ones in every accepted
 * container (with the RGB frames they were made from) and hostile ones (SECURITY.md row 10:
 * no frames, a header lying about the frame count, size or duration, a broken moov, an unknown
 * codec, garbage, playlists and concat scripts that point elsewhere).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export type VideoKind = 'mp4-x264rgb' | 'mkv-ffv1' | 'webm-vp9' | 'mov-h264' | 'avi-mjpeg';

export interface SyntheticVideo {
  file: string;
  kind: VideoKind;
  width: number;
  height: number;
  fps: number;
  /** The RGB24 frames given to the encoder, in order. */
  frames: Buffer[];
  /** The codec is lossless in RGB: decoded frames equal `frames` byte for byte. */
  lossless: boolean;
}

export interface VideoShape {
  width?: number;
  height?: number;
  frames?: number;
  fps?: number;
  /** Frames between keyframes (seeking must then decode from a keyframe). */
  gop?: number;
  /** The container's start time, seconds (every timestamp shifted by it). */
  startSeconds?: number;
  /** Add an audio stream (a sine) that starts half a second before the video. */
  audio?: boolean;
}

interface KindSpec {
  extension: string;
  lossless: boolean;
  args: (gop: number) => string[];
  audioCodec: string;
}

const KINDS: Readonly<Record<VideoKind, KindSpec>> = {
  'mp4-x264rgb': {
    extension: 'mp4',
    audioCodec: 'aac',
    lossless: true,
    args: (gop) => ['-c:v', 'libx264rgb', '-qp', '0', '-g', String(gop), '-pix_fmt', 'rgb24'],
  },
  'mkv-ffv1': {
    extension: 'mkv',
    audioCodec: 'pcm_s16le',
    lossless: true,
    args: (gop) => ['-c:v', 'ffv1', '-level', '3', '-g', String(gop), '-pix_fmt', 'bgr0'],
  },
  'webm-vp9': {
    extension: 'webm',
    audioCodec: 'libopus',
    lossless: true,
    args: (gop) => [
      ...['-c:v', 'libvpx-vp9', '-lossless', '1', '-pix_fmt', 'gbrp', '-g', String(gop)],
      ...['-deadline', 'realtime', '-cpu-used', '8', '-row-mt', '0'],
    ],
  },
  // Lossy, with B-frames: decode order differs from presentation order.
  'mov-h264': {
    extension: 'mov',
    audioCodec: 'aac',
    lossless: false,
    args: (gop) => [
      ...['-c:v', 'libx264', '-preset', 'veryfast', '-bf', '2', '-g', String(gop)],
      ...['-pix_fmt', 'yuv420p'],
    ],
  },
  'avi-mjpeg': {
    extension: 'avi',
    audioCodec: 'pcm_s16le',
    lossless: false,
    args: () => ['-c:v', 'mjpeg', '-q:v', '3', '-pix_fmt', 'yuvj420p'],
  },
};

export const VIDEO_KINDS = Object.keys(KINDS) as VideoKind[];

/** A fresh directory under the system temp dir; remove it with removeDir. */
export function makeTempDir(prefix = 'sam3-video-test-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/**
 * Frame `index` of a width x height synthetic clip: a gradient, a block that moves with the
 * index, and the index itself in the first row, so that no two frames are alike.
 */
export function syntheticFrame(width: number, height: number, index: number): Buffer {
  const frame = Buffer.alloc(width * height * 3);
  const blockX = (index * 5) % Math.max(1, width - 8);
  const blockY = (index * 3) % Math.max(1, height - 8);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const offset = 3 * (y * width + x);
      const inBlock = x >= blockX && x < blockX + 8 && y >= blockY && y < blockY + 8;
      frame[offset] = inBlock ? 250 : Math.floor((x * 255) / width);
      frame[offset + 1] = inBlock ? 20 : Math.floor((y * 255) / height);
      frame[offset + 2] = (index * 23 + (inBlock ? 128 : 0)) % 256;
    }
  }
  return frame;
}

/** Runs ffmpeg (no shell) with `input` on its stdin; rejects with its stderr on failure. */
export function runFfmpeg(args: readonly string[], input?: Buffer[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ffmpeg', ['-hide_banner', '-v', 'error', '-y', ...args], {
      stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (text: string) => (stderr += text));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`ffmpeg ${args.join(' ')}: ${code}\n${stderr}`)),
    );
    if (input !== undefined && child.stdin !== null) {
      const stdin = child.stdin;
      stdin.on('error', () => undefined);
      (async () => {
        for (const chunk of input) {
          if (!stdin.write(chunk)) await new Promise((r) => stdin.once('drain', r));
        }
        stdin.end();
      })().catch(reject);
    }
  });
}

/** Encodes synthetic frames into a video of `kind` under `dir`. */
export async function writeVideo(
  dir: string,
  kind: VideoKind,
  shape: VideoShape = {},
  name = `${kind}`,
): Promise<SyntheticVideo> {
  const { width = 64, height = 48, frames: count = 24, fps = 10, gop = 8 } = shape;
  const spec = KINDS[kind];
  const frames = Array.from({ length: count }, (_, index) => syntheticFrame(width, height, index));
  const file = path.join(dir, `${name}.${spec.extension}`);
  const start = shape.startSeconds ?? 0;
  const audio = shape.audio ? ['-f', 'lavfi', '-i', `sine=r=8000:d=${count / fps + 1}`] : [];
  await runFfmpeg(
    [
      ...['-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-r', String(fps)],
      ...(shape.audio ? ['-itsoffset', '0.5'] : []),
      ...['-i', 'pipe:0', ...audio, '-map', '0:v'],
      ...(shape.audio ? ['-map', '1:a', '-c:a', spec.audioCodec] : []),
      ...(start > 0 ? ['-output_ts_offset', String(start)] : []),
      ...spec.args(gop),
      file,
    ],
    frames,
  );
  return { file, kind, width, height, fps, frames, lossless: spec.lossless };
}

/**
 * `count` width x height RGB24 frames of shapes moving over a still background: a red disc
 * going right, a blue rectangle going down, a green square going diagonally (objects for a
 * tracker to follow; each stays whole inside the frame).
 */
export function movingShapesFrames(width: number, height: number, count: number): Buffer[] {
  const frames: Buffer[] = [];
  const radius = Math.max(2, Math.round(Math.min(width, height) / 8));
  const rectW = Math.max(2, Math.round(width / 6));
  const rectH = Math.max(2, Math.round(height / 5));
  const side = Math.max(2, Math.round(Math.min(width, height) / 7));
  const travel = (span: number, i: number): number =>
    count <= 1 ? 0 : Math.round((span * i) / (count - 1));
  for (let i = 0; i < count; i += 1) {
    const frame = Buffer.alloc(width * height * 3);
    const discX = radius + travel(width / 2 - 2 * radius, i);
    const discY = Math.round(height / 3);
    const rectX = Math.round((2 * width) / 3);
    const rectY = travel(height / 2 - rectH, i);
    const squareX = Math.round(width / 8) + travel(width / 3, i);
    const squareY = Math.round(height / 2 + travel(height / 2 - side - 1, i) / 2);
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        const offset = 3 * (y * width + x);
        let rgb: [number, number, number] = [
          90 + Math.floor((40 * x) / width),
          90 + Math.floor((40 * y) / height),
          100,
        ];
        if ((x - discX) ** 2 + (y - discY) ** 2 <= radius ** 2) rgb = [220, 30, 30];
        else if (x >= rectX && x < rectX + rectW && y >= rectY && y < rectY + rectH) {
          rgb = [30, 40, 220];
        } else if (x >= squareX && x < squareX + side && y >= squareY && y < squareY + side) {
          rgb = [30, 200, 60];
        }
        frame[offset] = rgb[0];
        frame[offset + 1] = rgb[1];
        frame[offset + 2] = rgb[2];
      }
    }
    frames.push(frame);
  }
  return frames;
}

/**
 * Frames for concept tracking: a red disc enters from the left and leaves on the right, a
 * yellow disc crosses it from the right, a green square appears half way through, and a blue
 * rectangle leaves through the bottom; a plain graded background.
 */
export function conceptShapesFrames(width: number, height: number, count: number): Buffer[] {
  const frames: Buffer[] = [];
  const radius = Math.max(3, Math.round(Math.min(width, height) / 7));
  const side = Math.max(3, Math.round(Math.min(width, height) / 5));
  const rectW = Math.max(3, Math.round(width / 5));
  const rectH = Math.max(3, Math.round(height / 4));
  const at = (from: number, to: number, i: number): number =>
    Math.round(from + ((to - from) * i) / Math.max(1, count - 1));
  for (let i = 0; i < count; i += 1) {
    const frame = Buffer.alloc(width * height * 3);
    const redX = at(-radius, width + radius, i);
    const yellowX = at(width + radius, -radius, i);
    const discY = Math.round(height / 3);
    const yellowY = Math.round(height / 3 + radius / 2);
    const squareOn = i >= Math.floor(count / 2);
    const squareX = Math.round(width / 2 - side / 2);
    const squareY = Math.round((3 * height) / 4 - side / 2);
    const rectX = Math.round(width / 10);
    const rectY = at(Math.round(height / 2), height + rectH, i);
    for (let y = 0; y < height; y += 1) {
      for (let x = 0; x < width; x += 1) {
        const offset = 3 * (y * width + x);
        let rgb: [number, number, number] = [
          70 + Math.floor((30 * x) / width),
          80 + Math.floor((30 * y) / height),
          90,
        ];
        if (x >= rectX && x < rectX + rectW && y >= rectY && y < rectY + rectH) {
          rgb = [30, 40, 220];
        }
        if (squareOn && x >= squareX && x < squareX + side && y >= squareY && y < squareY + side) {
          rgb = [30, 200, 60];
        }
        if ((x - yellowX) ** 2 + (y - yellowY) ** 2 <= radius ** 2) rgb = [230, 210, 40];
        if ((x - redX) ** 2 + (y - discY) ** 2 <= radius ** 2) rgb = [220, 30, 30];
        frame[offset] = rgb[0];
        frame[offset + 1] = rgb[1];
        frame[offset + 2] = rgb[2];
      }
    }
    frames.push(frame);
  }
  return frames;
}

/** Writes RGB24 `frames` as a lossless MP4 (libx264rgb -qp 0) at `file`: decodes exactly. */
export async function writeLosslessVideo(
  file: string,
  frames: readonly Buffer[],
  width: number,
  height: number,
  fps = 10,
): Promise<void> {
  await runFfmpeg(
    [
      ...['-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-r', String(fps)],
      ...['-i', 'pipe:0', ...KINDS['mp4-x264rgb'].args(8), file],
    ],
    [...frames],
  );
}

/** The frames of a video as one full sequential decode gives them (the reference). */
export async function decodeAll(file: string, width: number, height: number): Promise<Buffer[]> {
  const raw = path.join(path.dirname(file), `${path.basename(file)}.reference.rgb`);
  await runFfmpeg([
    ...['-i', file, '-map', '0:v:0', '-vsync', 'passthrough'],
    ...['-pix_fmt', 'rgb24', '-f', 'rawvideo', raw],
  ]);
  const bytes = await readFile(raw);
  await rm(raw);
  const frameBytes = width * height * 3;
  return Array.from({ length: bytes.length / frameBytes }, (_, i) =>
    bytes.subarray(i * frameBytes, (i + 1) * frameBytes),
  );
}

/**
 * An MP4 cut out of a B-frame H.264 clip by stream copy from 0.35 s: its edit list makes the
 * demuxer hand over leading packets the decoder must decode but not output, so the header's
 * frame count (the packets) is more than a decode gives.
 */
export async function writeEditListMp4(dir: string): Promise<SyntheticVideo> {
  const source = await writeVideo(dir, 'mov-h264', { frames: 30, gop: 10 }, 'edit-source');
  const file = path.join(dir, 'edit-list.mp4');
  await runFfmpeg(['-ss', '0.35', '-i', source.file, '-c', 'copy', file]);
  await rm(source.file);
  return { ...source, file, frames: [] };
}

/** A lossless MP4 whose display matrix rotates it by `degrees` (stored 64x48). */
export async function writeRotatedMp4(dir: string, degrees = 90): Promise<SyntheticVideo> {
  const source = await writeVideo(dir, 'mp4-x264rgb', { frames: 6 }, 'upright');
  const file = path.join(dir, `rotated-${degrees}.mp4`);
  await runFfmpeg([
    ...['-i', source.file, '-c', 'copy', '-metadata:s:v:0', `rotate=${degrees}`, file],
  ]);
  await rm(source.file);
  return { ...source, file, frames: [] };
}

function lcgBytes(length: number, seed: number): Buffer {
  const bytes = Buffer.alloc(length);
  let state = seed >>> 0;
  for (let i = 0; i < length; i += 1) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    bytes[i] = state >>> 24;
  }
  return bytes;
}

// ---- hostile videos (SECURITY.md row 10) ----

/** An AVI with a video stream and no frame in it. */
export async function writeZeroFrameAvi(dir: string): Promise<string> {
  const file = path.join(dir, 'zero-frames.avi');
  await runFfmpeg([
    ...['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-frames:v', '0'],
    ...['-c:v', 'mjpeg', file],
  ]);
  return file;
}

/** An MP4 holding no stream at all (what ffmpeg writes for zero frames). */
export async function writeStreamlessMp4(dir: string): Promise<string> {
  const file = path.join(dir, 'no-streams.mp4');
  await runFfmpeg([
    ...['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-frames:v', '0'],
    ...['-c:v', 'libx264', file],
  ]);
  return file;
}

function chunkOffset(bytes: Buffer, fourcc: string): number {
  const offset = bytes.indexOf(fourcc, 0, 'latin1');
  if (offset < 0) throw new Error(`no ${fourcc} chunk`);
  return offset;
}

/**
 * A 5-frame MJPEG AVI whose headers claim `frames` frames: the main header's dwTotalFrames and
 * the stream header's dwLength (what ffprobe reports as nb_frames).
 */
export async function writeFrameCountLieAvi(dir: string, frames = 2 ** 31): Promise<string> {
  const source = path.join(dir, 'honest.avi');
  await runFfmpeg([
    ...['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-frames:v', '5'],
    ...['-c:v', 'mjpeg', source],
  ]);
  const bytes = await readFile(source);
  // avih payload: dwMicroSecPerFrame, dwMaxBytesPerSec, dwPaddingGranularity, dwFlags,
  // dwTotalFrames (+16). strh payload: fccType, fccHandler, dwFlags, wPriority + wLanguage,
  // dwInitialFrames, dwScale, dwRate, dwStart, dwLength (+32).
  bytes.writeUInt32LE(frames, chunkOffset(bytes, 'avih') + 8 + 16);
  bytes.writeUInt32LE(frames, chunkOffset(bytes, 'strh') + 8 + 32);
  const file = path.join(dir, `claims-${frames}-frames.avi`);
  await writeFile(file, bytes);
  await rm(source);
  return file;
}

/**
 * A 3-frame FFV1 Matroska file of 256x256 whose track header declares side x side: the
 * PixelWidth (0xB0) and PixelHeight (0xBA) elements, two bytes each, patched in place.
 */
export async function writeHugeDeclaredMkv(dir: string, side = 16384): Promise<string> {
  const source = path.join(dir, 'small.mkv');
  await runFfmpeg([
    ...['-f', 'lavfi', '-i', 'testsrc2=size=256x256:rate=10', '-frames:v', '3'],
    ...['-c:v', 'ffv1', '-pix_fmt', 'bgr0', source],
  ]);
  const bytes = await readFile(source);
  for (const id of [0xb0, 0xba]) {
    const element = Buffer.from([id, 0x82, 0x01, 0x00]); // id, size 2, value 256
    const offset = bytes.indexOf(element);
    if (offset < 0 || bytes.indexOf(element, offset + 1) >= 0) {
      throw new Error(`expected exactly one ${id.toString(16)} element of 256`);
    }
    bytes.writeUInt16BE(side, offset + 2);
  }
  const file = path.join(dir, `declares-${side}x${side}.mkv`);
  await writeFile(file, bytes);
  await rm(source);
  return file;
}

/** A 3-frame Matroska video whose last frame is shown `seconds` in: hours long, a tiny file. */
export async function writeLongDeclaredMkv(dir: string, seconds = 3 * 3600): Promise<string> {
  const file = path.join(dir, `lasts-${seconds}s.mkv`);
  await runFfmpeg([
    ...['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=1', '-frames:v', '3'],
    ...['-vf', `setpts='if(eq(N,2),${seconds}/TB,PTS)'`, '-vsync', 'passthrough'],
    ...['-c:v', 'ffv1', file],
  ]);
  return file;
}

/** An MP4 with its moov at the end, cut before the moov: nothing describes the data. */
export async function writeMoovlessMp4(dir: string): Promise<string> {
  const source = await writeVideo(dir, 'mp4-x264rgb', { frames: 10 }, 'moov-at-end');
  const bytes = await readFile(source.file);
  const file = path.join(dir, 'moov-cut-off.mp4');
  await writeFile(file, bytes.subarray(0, chunkOffset(bytes, 'moov') - 4));
  await rm(source.file);
  return file;
}

/** A fast-start MP4 (moov first) cut in the middle of its moov: a broken sample table. */
export async function writeBrokenMoovMp4(dir: string): Promise<string> {
  const source = path.join(dir, 'faststart.mp4');
  await runFfmpeg([
    ...['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-frames:v', '10'],
    ...['-c:v', 'libx264', '-movflags', '+faststart', source],
  ]);
  const bytes = await readFile(source);
  const file = path.join(dir, 'broken-moov.mp4');
  await writeFile(file, bytes.subarray(0, chunkOffset(bytes, 'moov') + 200));
  await rm(source);
  return file;
}

/** A faithful MP4 of `frames` frames cut at `fraction` of its media data (moov first). */
export async function writeTruncatedMp4(
  dir: string,
  frames = 20,
  fraction = 0.5,
): Promise<{ file: string; declaredFrames: number }> {
  const source = path.join(dir, 'whole.mp4');
  await runFfmpeg([
    ...['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-frames:v', String(frames)],
    ...['-c:v', 'libx264rgb', '-qp', '0', '-g', '8', '-pix_fmt', 'rgb24'],
    ...['-movflags', '+faststart', source],
  ]);
  const bytes = await readFile(source);
  const mdat = chunkOffset(bytes, 'mdat');
  const file = path.join(dir, 'truncated.mp4');
  await writeFile(file, bytes.subarray(0, mdat + Math.floor((bytes.length - mdat) * fraction)));
  await rm(source);
  return { file, declaredFrames: frames };
}

/** An MJPEG AVI whose codec tag is changed to one no decoder knows (ZZZZ). */
export async function writeUnknownCodecAvi(dir: string): Promise<string> {
  const source = path.join(dir, 'mjpeg.avi');
  await runFfmpeg([
    ...['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-frames:v', '5'],
    ...['-c:v', 'mjpeg', source],
  ]);
  const bytes = await readFile(source);
  const patched = Buffer.from(bytes.toString('latin1').replaceAll('MJPG', 'ZZZZ'), 'latin1');
  const file = path.join(dir, 'unknown-codec.avi');
  await writeFile(file, patched);
  await rm(source);
  return file;
}

/** `length` pseudo-random bytes (deterministic). */
export async function writeGarbage(dir: string, length = 5000): Promise<string> {
  const file = path.join(dir, 'garbage.bin');
  await writeFile(file, lcgBytes(length, 1234));
  return file;
}

/** An HLS playlist whose one segment is `target` (default file:///etc/passwd). */
export async function writeHlsPlaylist(
  dir: string,
  target = 'file:///etc/passwd',
  name = 'playlist.m3u8',
): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(
    file,
    ['#EXTM3U', '#EXT-X-TARGETDURATION:10', '#EXTINF:1.0,', target, '#EXT-X-ENDLIST', ''].join(
      '\n',
    ),
  );
  return file;
}

/** An MPEG-TS segment a playlist can point at (so that the playlist itself is playable). */
export async function writeTsSegment(dir: string): Promise<string> {
  const file = path.join(dir, 'segment.ts');
  await runFfmpeg([
    ...['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=10', '-frames:v', '10'],
    ...['-c:v', 'libx264', file],
  ]);
  return file;
}

/** An ffconcat script listing `target`. */
export async function writeConcatScript(dir: string, target: string): Promise<string> {
  const file = path.join(dir, 'list.ffconcat');
  await writeFile(file, `ffconcat version 1.0\nfile '${target}'\n`);
  return file;
}
