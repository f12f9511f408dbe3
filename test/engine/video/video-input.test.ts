/**
 * Video inputs on the real file system: video_path confinement (SECURITY.md row 6), strict
 * video_base64 (row 7's base64 part), adopting an upload, and files the session owns being
 * removed by dispose() (and only those).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  mkdir,
  readdir,
  readFile,
  realpath,
  stat,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { VideoInputError } from '../../../src/engine/video/errors';
import {
  adoptUploadedVideo,
  decodeVideoBase64,
  openVideoInput,
  reserveUploadFile,
  resolveVideoPath,
  writeVideoBase64,
} from '../../../src/engine/video/video-input';
import { makeTempDir, removeDir } from '../../helpers/videos';

function videoError(code: string, message: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof VideoInputError, `expected a VideoInputError, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    return true;
  };
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

const UPLOAD_NAME = /^video-[0-9a-f]{32}$/;

describe('resolveVideoPath', () => {
  let base: string;
  let root: string;
  let video: string;
  before(async () => {
    base = await realpath(await makeTempDir('sam3-path-test-'));
    root = path.join(base, 'root');
    const outside = path.join(base, 'outside');
    await mkdir(path.join(root, 'sub'), { recursive: true });
    await mkdir(path.join(root, 'folder'));
    await mkdir(outside);
    await mkdir(path.join(base, 'root-evil'));
    video = path.join(root, 'video.mp4');
    await writeFile(video, 'inside');
    await writeFile(path.join(root, 'sub', 'clip.mp4'), 'clip');
    await writeFile(path.join(outside, 'secret.mp4'), 'secret');
    await writeFile(path.join(base, 'root-evil', 'file.mp4'), 'evil');
    await symlink(path.join(outside, 'secret.mp4'), path.join(root, 'link-out.mp4'));
    await symlink(outside, path.join(root, 'dir-link'));
    await symlink(video, path.join(root, 'link-in.mp4'));
    await symlink(root, path.join(base, 'root-link'));
    await promisify(execFile)('mkfifo', [path.join(root, 'pipe.mp4')]);
  });
  after(async () => {
    await removeDir(base);
  });

  it('accepts files inside a root: relative, absolute, via a link that stays inside', async () => {
    for (const [given, expected] of [
      ['video.mp4', video],
      ['sub/clip.mp4', path.join(root, 'sub', 'clip.mp4')],
      ['./sub//clip.mp4', path.join(root, 'sub', 'clip.mp4')],
      [video, video],
      ['link-in.mp4', video],
    ] as const) {
      const input = await resolveVideoPath(given, [root]);
      assert.deepEqual([input.file, input.owned], [expected, false], given);
      await input.dispose();
      assert.equal(await readFile(video, 'utf8'), 'inside', 'dispose leaves it alone');
    }
  });

  it('compares real paths: a root given through a symlink, several roots', async () => {
    const viaLink = await resolveVideoPath(path.join(base, 'root-link', 'video.mp4'), [
      path.join(base, 'root-link'),
    ]);
    assert.equal(viaLink.file, video);
    const second = await resolveVideoPath(path.join(root, 'sub', 'clip.mp4'), [
      path.join(base, 'nonexistent-root'),
      path.join(root, 'sub'),
    ]);
    assert.equal(second.file, path.join(root, 'sub', 'clip.mp4'));
  });

  it('refuses traversal, encodings, NUL and everything outside the roots', async () => {
    const outsideMessage = /^video_path is outside the directories allowed for videos$/;
    for (const [given, message] of [
      ['../../etc/passwd', /^video_path must not contain "\.\." segments$/],
      ['sub/../video.mp4', /"\.\." segments/],
      ['..', /"\.\." segments/],
      ['sub\\..\\..\\outside\\secret.mp4', /"\.\." segments/],
      ['%2e%2e/%2e%2e/etc/passwd', /^video_path must not contain percent-encoded characters$/],
      ['%2E%2E%2Fetc%2Fpasswd', /percent-encoded/],
      ['%252e%252e/etc/passwd', /percent-encoded/],
      ['..%2fetc', /percent-encoded/],
      ['video.mp4\0.txt', /^video_path must not contain NUL$/],
      ['/etc/passwd', outsideMessage],
      [path.join(base, 'outside', 'secret.mp4'), outsideMessage],
      [path.join(base, 'root-evil', 'file.mp4'), outsideMessage],
      ['link-out.mp4', outsideMessage],
      ['dir-link/secret.mp4', outsideMessage],
      ['/nonexistent-dir/x.mp4', outsideMessage],
      ['folder', /^video_path is not a regular file$/],
      ['pipe.mp4', /^video_path is not a regular file$/],
      [root, /^video_path is not a regular file$/],
      ['', /^video_path is empty$/],
      ['a'.repeat(5000), /^video_path is longer than 4096 characters$/],
    ] as const) {
      await assert.rejects(
        resolveVideoPath(given, [root]),
        videoError('path_not_allowed', message),
        given.slice(0, 80),
      );
    }
    await assert.rejects(
      resolveVideoPath('video.mp4', []),
      videoError('path_not_allowed', /^no directory is allowed for video_path$/),
    );
  });

  it('says not_found only for a missing file inside a root', async () => {
    await assert.rejects(
      resolveVideoPath('missing.mp4', [root]),
      videoError('not_found', /^video_path names no file$/),
    );
    await assert.rejects(
      resolveVideoPath('video.mp4/inner', [root]),
      videoError('not_found', /^video_path names no file$/),
    );
  });
});

describe('video_base64 and uploads', () => {
  let base: string;
  let uploads: string;
  before(async () => {
    base = await makeTempDir('sam3-upload-test-');
    uploads = path.join(base, 'uploads', 'nested');
  });
  after(async () => {
    await removeDir(base);
  });

  it('writes strict base64 to a new owned 0600 file under a new 0700 upload dir', async () => {
    const bytes = Buffer.from([0, 1, 2, 250, 251, 252, 253]);
    const input = await writeVideoBase64(bytes.toString('base64'), uploads, 100);
    assert.equal(input.owned, true);
    assert.equal(path.dirname(input.file), path.resolve(uploads));
    assert.match(path.basename(input.file), UPLOAD_NAME);
    assert.ok((await readFile(input.file)).equals(bytes));
    assert.equal((await stat(input.file)).mode & 0o777, 0o600);
    assert.equal((await stat(uploads)).mode & 0o777, 0o700);
    await input.dispose();
    await input.dispose();
    assert.equal(await exists(input.file), false);
  });

  it('accepts a data: URL prefix', async () => {
    const input = await writeVideoBase64('data:video/mp4;base64,AAEC', uploads, 100);
    assert.ok((await readFile(input.file)).equals(Buffer.from([0, 1, 2])));
    await input.dispose();
  });

  it('refuses anything but strict base64, and more bytes than the limit, writing nothing', async () => {
    const before = (await readdir(uploads)).length;
    for (const [data, message] of [
      ['', /^video_base64 is empty$/],
      ['data:video/mp4;base64,', /^video_base64 is empty$/],
      ['abc', /not valid base64/],
      ['ab=c', /not valid base64/],
      ['YWJj\n', /not valid base64/],
      ['YW Jj', /not valid base64/],
      ['-_-_', /not valid base64/],
      ['YWJj====', /not valid base64/],
      ['data:video/mp4,AAEC', /^a data: URL video must be base64 \(;base64,\)$/],
    ] as const) {
      await assert.rejects(
        writeVideoBase64(data, uploads, 100),
        videoError('invalid_base64', message),
        JSON.stringify(data),
      );
    }
    assert.equal(decodeVideoBase64('YWJj', 3).toString(), 'abc');
    assert.throws(
      () => decodeVideoBase64('YWJjZA==', 3),
      videoError('payload_too_large', /^the video is larger than 3 bytes \(MAX_UPLOAD_SIZE_MB\)$/),
    );
    assert.equal((await readdir(uploads)).length, before);
  });

  it('adopts an upload from elsewhere by moving it in, one already inside in place', async () => {
    const elsewhere = path.join(base, 'multer-tmp');
    await mkdir(elsewhere);
    const outsideFile = path.join(elsewhere, 'abc123');
    await writeFile(outsideFile, 'uploaded', { mode: 0o644 });
    const moved = await adoptUploadedVideo(outsideFile, uploads, 100);
    assert.equal(path.dirname(moved.file), path.resolve(uploads));
    assert.match(path.basename(moved.file), UPLOAD_NAME);
    assert.equal(await exists(outsideFile), false);
    assert.equal(await readFile(moved.file, 'utf8'), 'uploaded');
    assert.equal((await stat(moved.file)).mode & 0o777, 0o600);
    await moved.dispose();
    assert.equal(await exists(moved.file), false);

    const insideFile = path.join(uploads, 'multer-name');
    await writeFile(insideFile, 'uploaded', { mode: 0o644 });
    const kept = await adoptUploadedVideo(insideFile, uploads);
    assert.deepEqual([kept.file, kept.owned], [insideFile, true]);
    assert.equal((await stat(insideFile)).mode & 0o777, 0o600);
    await kept.dispose();
    assert.equal(await exists(insideFile), false);
  });

  it('refuses an upload over the limit (removing it) and a symlink', async () => {
    const big = path.join(uploads, 'big-upload');
    await writeFile(big, Buffer.alloc(101));
    await assert.rejects(
      adoptUploadedVideo(big, uploads, 100),
      videoError('payload_too_large', /^the video is larger than 100 bytes/),
    );
    assert.equal(await exists(big), false);
    const target = path.join(base, 'target');
    await writeFile(target, 'x');
    const link = path.join(uploads, 'link');
    await symlink(target, link);
    await assert.rejects(adoptUploadedVideo(link, uploads), /not a link/);
    assert.equal(await readFile(target, 'utf8'), 'x');
    await unlink(link);
  });

  it('reserves a fresh name for a download; dispose removes whatever was written there', async () => {
    const reserved = await reserveUploadFile(uploads);
    assert.match(path.basename(reserved.file), UPLOAD_NAME);
    assert.equal(await exists(reserved.file), false);
    await writeFile(reserved.file, 'downloaded');
    await reserved.dispose();
    assert.equal(await exists(reserved.file), false);
    const unused = await reserveUploadFile(uploads);
    await unused.dispose(); // nothing was written: still fine
  });

  it('openVideoInput dispatches every kind', async () => {
    const fromBytes = await openVideoInput({
      kind: 'bytes',
      data: Buffer.from('raw'),
      uploadDir: uploads,
      maxBytes: 10,
    });
    const fromBase64 = await openVideoInput({
      kind: 'base64',
      data: 'cmF3',
      uploadDir: uploads,
      maxBytes: 10,
    });
    const fromPath = await openVideoInput({
      kind: 'path',
      path: path.basename(fromBytes.file),
      roots: [uploads],
    });
    const empty = await openVideoInput({ kind: 'empty', uploadDir: uploads });
    assert.deepEqual(
      [
        await readFile(fromBytes.file, 'utf8'),
        await readFile(fromBase64.file, 'utf8'),
        fromPath.file === (await realpath(fromBytes.file)),
        fromPath.owned,
        await exists(empty.file),
      ],
      ['raw', 'raw', true, false, false],
    );
    await assert.rejects(
      openVideoInput({ kind: 'bytes', data: Buffer.alloc(11), uploadDir: uploads, maxBytes: 10 }),
      videoError('payload_too_large', /larger than 10 bytes/),
    );
    for (const input of [fromPath, fromBytes, fromBase64, empty]) await input.dispose();
    assert.deepEqual(await readdir(uploads), []);
  });
});
