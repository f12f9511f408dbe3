/**
 * The local file a video session reads, from each kind of input: a `video_path` inside the
 * allowed roots, a `video_base64` body, a multipart upload, or an empty file for a download.
 *
 * A file the server writes belongs to the session (`owned`): it lives under UPLOAD_DIR (made
 * 0700 if missing) with an unguessable name, mode 0600, and `dispose()` removes it. A
 * `video_path` file is the operator's: `dispose()` leaves it alone.
 */
import { randomBytes } from 'node:crypto';
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  open,
  realpath,
  rename,
  stat,
  unlink,
} from 'node:fs/promises';
import path from 'node:path';
import { VideoInputError } from './errors';

export interface VideoInput {
  /** Absolute path of the local file to probe and decode. */
  readonly file: string;
  /** Whether the session owns the file (dispose removes it). */
  readonly owned: boolean;
  /** Removes an owned file; does nothing for a path input. Idempotent. */
  dispose(): Promise<void>;
}

export type VideoInputRequest =
  | { kind: 'path'; path: string; roots: readonly string[] }
  | { kind: 'base64'; data: string; uploadDir: string; maxBytes: number }
  | { kind: 'bytes'; data: Buffer; uploadDir: string; maxBytes: number }
  /** A file already written by the upload middleware (multer); the session adopts it. */
  | { kind: 'file'; file: string; uploadDir: string; maxBytes?: number }
  /** A fresh name under uploadDir, not yet created (downloadVideo creates it). */
  | { kind: 'empty'; uploadDir: string };

const MAX_PATH_LENGTH = 4096;
// Percent-escapes of ".", "/", "\", NUL and "%" itself: a path is not URL-decoded, so these
// only ever appear in an attempt to get a traversal past some other decoder.
const ENCODED_TRICK = /%(2e|2f|5c|00|25)/i;

function pathNotAllowed(message: string): VideoInputError {
  return new VideoInputError('path_not_allowed', message);
}

function isInside(child: string, root: string): boolean {
  if (child === root) return true;
  return child.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

async function realRoots(roots: readonly string[]): Promise<string[]> {
  const resolved = await Promise.all(
    roots.map((root) => realpath(path.resolve(root)).catch(() => null)),
  );
  return resolved.filter((root): root is string => root !== null);
}

const notOwned = (file: string): VideoInput => ({
  file,
  owned: false,
  dispose: async () => undefined,
});

function owned(file: string): VideoInput {
  let disposing: Promise<void> | null = null;
  return {
    file,
    owned: true,
    dispose: () =>
      (disposing ??= unlink(file).catch((error: unknown) => {
        if (errnoCode(error) !== 'ENOENT') throw error;
      })),
  };
}

/**
 * `video_path` -> its real path, which must be a regular file inside one of `roots` (after
 * resolving symlinks of both). A relative path is relative to the first root. Refused with
 * path_not_allowed: NUL, "..", percent-encoded tricks, anything outside the roots (a symlink
 * out included), a directory or device; not_found: no such file inside a root.
 */
export async function resolveVideoPath(
  videoPath: string,
  roots: readonly string[],
): Promise<VideoInput> {
  if (videoPath === '') throw pathNotAllowed('video_path is empty');
  if (videoPath.length > MAX_PATH_LENGTH) {
    throw pathNotAllowed(`video_path is longer than ${MAX_PATH_LENGTH} characters`);
  }
  if (videoPath.includes('\0')) throw pathNotAllowed('video_path must not contain NUL');
  if (ENCODED_TRICK.test(videoPath)) {
    throw pathNotAllowed('video_path must not contain percent-encoded characters');
  }
  if (videoPath.split(/[\\/]/).includes('..')) {
    throw pathNotAllowed('video_path must not contain ".." segments');
  }
  const first = roots[0];
  if (first === undefined) throw pathNotAllowed('no directory is allowed for video_path');
  const candidate = path.isAbsolute(videoPath)
    ? path.normalize(videoPath)
    : path.resolve(first, videoPath);
  const allowed = await realRoots(roots);
  let real: string;
  try {
    real = await realpath(candidate);
  } catch (error) {
    const code = errnoCode(error);
    const lexicallyInside = [...roots.map((root) => path.resolve(root)), ...allowed].some((root) =>
      isInside(candidate, root),
    );
    if ((code === 'ENOENT' || code === 'ENOTDIR') && lexicallyInside) {
      throw new VideoInputError('not_found', 'video_path names no file');
    }
    throw pathNotAllowed('video_path is outside the directories allowed for videos');
  }
  if (!allowed.some((root) => isInside(real, root))) {
    throw pathNotAllowed('video_path is outside the directories allowed for videos');
  }
  const info = await stat(real);
  if (!info.isFile()) throw pathNotAllowed('video_path is not a regular file');
  return notOwned(real);
}

/** A new, unguessable file name under `uploadDir` (created 0700 when missing). */
async function newUploadName(uploadDir: string): Promise<string> {
  const dir = path.resolve(uploadDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return path.join(dir, `video-${randomBytes(16).toString('hex')}`);
}

/** Writes `bytes` to a new owned file under `uploadDir`. */
export async function writeVideoBytes(
  bytes: Buffer,
  uploadDir: string,
  maxBytes: number,
): Promise<VideoInput> {
  if (bytes.length > maxBytes) throw tooLarge(maxBytes);
  const file = await newUploadName(uploadDir);
  const handle = await open(file, 'wx', 0o600);
  try {
    await handle.writeFile(bytes);
  } catch (error) {
    await handle.close();
    await unlink(file).catch(() => undefined);
    throw error;
  }
  await handle.close();
  return owned(file);
}

function tooLarge(maxBytes: number): VideoInputError {
  return new VideoInputError(
    'payload_too_large',
    `the video is larger than ${maxBytes} bytes (MAX_UPLOAD_SIZE_MB)`,
  );
}

// `data:<media type>[;params];base64,` (RFC 2397).
const DATA_URL_PREFIX = /^data:[^,;]*((?:;[^,;]*)*),/i;
// Standard alphabet, canonical padding, no whitespace; linear time.
const STRICT_BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Strict base64 (a `data:...;base64,` prefix accepted) -> bytes, refusing more than
 * `maxBytes` decoded bytes before decoding anything.
 */
export function decodeVideoBase64(data: string, maxBytes: number): Buffer {
  let body = data;
  const prefix = DATA_URL_PREFIX.exec(data.slice(0, 256));
  if (prefix !== null) {
    if (!(prefix[1] ?? '').toLowerCase().split(';').includes('base64')) {
      throw new VideoInputError('invalid_base64', 'a data: URL video must be base64 (;base64,)');
    }
    body = data.slice(prefix[0].length);
  }
  if (body.length === 0) throw new VideoInputError('invalid_base64', 'video_base64 is empty');
  if (body.length % 4 !== 0 || !STRICT_BASE64.test(body)) {
    throw new VideoInputError(
      'invalid_base64',
      'video_base64 is not valid base64 (standard alphabet, padded, no whitespace)',
    );
  }
  const padding = body.endsWith('==') ? 2 : body.endsWith('=') ? 1 : 0;
  if ((body.length / 4) * 3 - padding > maxBytes) throw tooLarge(maxBytes);
  return Buffer.from(body, 'base64');
}

/** `video_base64` -> a new owned file under `uploadDir`. */
export async function writeVideoBase64(
  data: string,
  uploadDir: string,
  maxBytes: number,
): Promise<VideoInput> {
  return writeVideoBytes(decodeVideoBase64(data, maxBytes), uploadDir, maxBytes);
}

/**
 * Takes over an uploaded file (multer's): moved under `uploadDir` with a fresh name unless it
 * is already there, made 0600, owned from now on. Over `maxBytes` it is removed and refused.
 */
export async function adoptUploadedVideo(
  file: string,
  uploadDir: string,
  maxBytes?: number,
): Promise<VideoInput> {
  const source = path.resolve(file);
  const info = await lstat(source);
  if (!info.isFile()) throw new Error('an uploaded video must be a regular file (not a link)');
  if (maxBytes !== undefined && info.size > maxBytes) {
    await unlink(source).catch(() => undefined);
    throw tooLarge(maxBytes);
  }
  const target = await newUploadName(uploadDir);
  const dir = await realpath(path.dirname(target));
  let adopted = source;
  if (!isInside(await realpath(source), dir)) {
    try {
      await rename(source, target);
    } catch (error) {
      if (errnoCode(error) !== 'EXDEV') throw error;
      await copyFile(source, target);
      await unlink(source);
    }
    adopted = target;
  }
  await chmod(adopted, 0o600);
  return owned(adopted);
}

/** A fresh owned name under `uploadDir`, not created yet (a download's destination). */
export async function reserveUploadFile(uploadDir: string): Promise<VideoInput> {
  return owned(await newUploadName(uploadDir));
}

/** One entry point for every kind of input (what VideoSessions uses). */
export function openVideoInput(request: VideoInputRequest): Promise<VideoInput> {
  switch (request.kind) {
    case 'path':
      return resolveVideoPath(request.path, request.roots);
    case 'base64':
      return writeVideoBase64(request.data, request.uploadDir, request.maxBytes);
    case 'bytes':
      return writeVideoBytes(request.data, request.uploadDir, request.maxBytes);
    case 'file':
      return adoptUploadedVideo(request.file, request.uploadDir, request.maxBytes);
    case 'empty':
      return reserveUploadFile(request.uploadDir);
  }
}
