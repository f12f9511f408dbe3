/**
 * FrameSource with the real ffmpeg: every frame by random access, backward and forward equals
 * a full sequential decode byte for byte (and the RGB frames written, for lossless codecs); the
 * window bounds memory; decoders are reused forward and chunked backward (counted); crashes,
 * truncation, stalls and close() give typed errors and leave no child process.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { VideoInputError, VideoToolError } from '../../../src/engine/video/errors';
import { FrameSource } from '../../../src/engine/video/frame-source';
import { probeVideo, type ProbeOptions, type VideoInfo } from '../../../src/engine/video/probe';
import {
  VIDEO_KINDS,
  decodeAll,
  makeTempDir,
  removeDir,
  writeEditListMp4,
  writeRotatedMp4,
  writeTruncatedMp4,
  writeUnknownCodecAvi,
  writeVideo,
} from '../../helpers/videos';

const LIMITS: ProbeOptions = {
  maxFrames: 10_000,
  maxPixels: 3840 * 2160,
  maxDurationSeconds: 3600,
};

/** Live (or not yet reaped) ffmpeg children of this process, from /proc. */
async function ffmpegChildren(): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // "pid (comm) state ppid ..."; comm may hold spaces, so split after its closing paren.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    if (ppid === process.pid && comm === 'ffmpeg') pids.push(Number(entry));
  }
  return pids;
}

/** 0..n-1 in a fixed pseudo-random order. */
function shuffled(n: number, seed = 7): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let state = seed;
  for (let i = n - 1; i > 0; i -= 1) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    const j = state % (i + 1);
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
}

function videoError(code: string, message: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof VideoInputError, `expected a VideoInputError, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    return true;
  };
}

async function assertFrames(
  source: FrameSource,
  order: readonly number[],
  expected: readonly Buffer[],
  label: string,
): Promise<void> {
  for (const index of order) {
    const frame = await source.getFrame(index);
    assert.ok(frame.equals(expected[index] as Buffer), `${label}: frame ${index} differs`);
  }
}

describe('FrameSource', () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir();
  });
  after(async () => {
    await removeDir(dir);
    assert.deepEqual(await ffmpegChildren(), [], 'no ffmpeg child outlives the tests');
  });

  for (const kind of VIDEO_KINDS) {
    it(`${kind}: random, backward and forward access all equal the sequential decode`, async () => {
      const video = await writeVideo(dir, kind, { frames: 16, gop: 6 });
      const info = await probeVideo(video.file, LIMITS);
      const reference = await decodeAll(video.file, video.width, video.height);
      assert.equal(reference.length, 16);
      if (video.lossless) {
        reference.forEach((frame, i) =>
          assert.ok(frame.equals(video.frames[i] as Buffer), `decoded frame ${i} is not lossless`),
        );
      }
      for (const [label, order] of [
        ['random', shuffled(16)],
        ['backward', Array.from({ length: 16 }, (_, i) => 15 - i)],
        ['forward', Array.from({ length: 16 }, (_, i) => i)],
      ] as const) {
        const source = await FrameSource.open(video.file, info, { windowFrames: 4 });
        try {
          await assertFrames(source, order, reference, `${kind} ${label}`);
          if (label === 'forward') assert.equal(source.stats().decodersStarted, 1);
        } finally {
          await source.close();
        }
      }
    });
  }

  it('reads backward in window-sized chunks, served from the window in reverse', async () => {
    const video = await writeVideo(dir, 'mkv-ffv1', { frames: 24 }, 'backward');
    const info = await probeVideo(video.file, LIMITS);
    const frameBytes = 64 * 48 * 3;
    const source = await FrameSource.open(video.file, info, { windowFrames: 4 });
    try {
      for (let i = 23; i >= 0; i -= 1) {
        const frame = await source.getFrame(i);
        assert.ok(frame.equals(video.frames[i] as Buffer), `frame ${i}`);
        assert.ok(source.stats().framesHeld <= 4);
        assert.ok(source.byteSize <= 4 * frameBytes);
      }
      // open: 1 decoder for frame 0; 23: a new forward decoder; then chunks ending at 22, 18,
      // 14, 10, 6 (4 frames each) and 2 (frames 0-2).
      const { decodersStarted, framesDecoded, framesHeld, bytesHeld } = source.stats();
      assert.deepEqual(
        { decodersStarted, framesDecoded, framesHeld, bytesHeld },
        {
          decodersStarted: 8,
          framesDecoded: 1 + 1 + 5 * 4 + 3,
          framesHeld: 4,
          bytesHeld: 4 * frameBytes,
        },
      );
    } finally {
      await source.close();
    }
  });

  it('reads forward with one decoder and a bounded window, whatever the length', async () => {
    const video = await writeVideo(dir, 'mkv-ffv1', { width: 32, height: 24, frames: 300 }, 'long');
    const info = await probeVideo(video.file, LIMITS);
    const frameBytes = 32 * 24 * 3;
    const source = await FrameSource.open(video.file, info, { windowFrames: 8 });
    let peak = 0;
    try {
      for (let i = 0; i < 300; i += 1) {
        const frame = await source.getFrame(i);
        assert.ok(frame.equals(video.frames[i] as Buffer), `frame ${i}`);
        peak = Math.max(peak, source.byteSize);
      }
      assert.equal(peak, 8 * frameBytes);
      const stats = source.stats();
      assert.deepEqual([stats.decodersStarted, stats.framesDecoded], [1, 300]);
      assert.deepEqual([stats.framesHeld, stats.bytesHeld], [8, 8 * frameBytes]);
    } finally {
      await source.close();
    }
  });

  it('serves window hits without decoding, skips ahead within reach, seeks beyond it', async () => {
    const video = await writeVideo(dir, 'mp4-x264rgb', { frames: 120, gop: 12 }, 'jumps');
    const info = await probeVideo(video.file, LIMITS);
    const source = await FrameSource.open(video.file, info, { windowFrames: 6 });
    const counts = (): [number, number] => [
      source.stats().decodersStarted,
      source.stats().framesDecoded,
    ];
    try {
      assert.deepEqual(counts(), [1, 1]); // frame 0, decoded by open
      await assertFrames(source, [0, 3], video.frames, 'near');
      assert.deepEqual(counts(), [1, 4]); // 1, 2, 3 read through by the same decoder
      await assertFrames(source, [100, 101, 102], video.frames, 'jump');
      assert.deepEqual(counts(), [2, 7]);
      await assertFrames(source, [100, 102, 101], video.frames, 'hits');
      assert.deepEqual(counts(), [2, 7]);
      await assertFrames(source, [50], video.frames, 'behind');
      assert.deepEqual(counts(), [3, 13]); // the chunk 45-50
      await assertFrames(source, [49, 48, 47, 46, 45], video.frames, 'chunk');
      assert.deepEqual(counts(), [3, 13]);
      // Calls made together are served one at a time, each with its own frame.
      const together = await Promise.all([7, 8, 60, 9].map((i) => source.getFrame(i)));
      [7, 8, 60, 9].forEach((index, k) =>
        assert.ok((together[k] as Buffer).equals(video.frames[index] as Buffer), `frame ${index}`),
      );
    } finally {
      await source.close();
    }
  });

  it('decodes edit-listed, late-starting, audio-carrying and rotated videos exactly', async () => {
    const videos = [
      await writeEditListMp4(dir),
      await writeVideo(dir, 'mkv-ffv1', { frames: 12, startSeconds: 5, audio: true }, 'late-mkv'),
      await writeVideo(
        dir,
        'mp4-x264rgb',
        { frames: 12, startSeconds: 1.3, audio: true },
        'late-mp4',
      ),
      await writeRotatedMp4(dir, 90),
    ];
    for (const video of videos) {
      const info = await probeVideo(video.file, LIMITS);
      const reference = await decodeAll(video.file, info.width, info.height);
      assert.equal(info.totalFrames, reference.length, path.basename(video.file));
      const source = await FrameSource.open(video.file, info, { windowFrames: 3 });
      try {
        await assertFrames(source, shuffled(info.totalFrames), reference, video.file);
        assert.equal((await source.getFrame(0)).length, info.width * info.height * 3);
      } finally {
        await source.close();
      }
    }
  });

  it('a truncated file: frames up to the cut, then a clear error for that frame only', async () => {
    const { file } = await writeTruncatedMp4(dir, 20, 0.5);
    const info = await probeVideo(file, LIMITS);
    const reference = await decodeAll(file, 64, 48);
    assert.deepEqual([info.totalFrames, reference.length], [9, 8]);
    const source = await FrameSource.open(file, info, { windowFrames: 4 });
    try {
      await assertFrames(source, [0, 1, 2, 3, 4, 5, 6, 7], reference, 'truncated');
      await assert.rejects(
        source.getFrame(8),
        videoError(
          'invalid_video',
          /^frame 8 could not be decoded: the video's data ends after frame 7$/,
        ),
      );
      await assertFrames(source, [2], reference, 'after the error');
    } finally {
      await source.close();
    }
  });

  it('a decoder killed mid-propagation fails one call; the next call decodes again', async () => {
    const video = await writeVideo(dir, 'mkv-ffv1', { frames: 200 }, 'killed');
    const info = await probeVideo(video.file, LIMITS);
    const source = await FrameSource.open(video.file, info, { windowFrames: 4 });
    try {
      await assertFrames(source, [1, 2, 3, 4, 5], video.frames, 'before');
      const children = await ffmpegChildren();
      assert.equal(children.length, 1);
      process.kill(children[0] as number, 'SIGKILL');
      let failedAt = -1;
      for (let i = 6; i < 200 && failedAt < 0; i += 1) {
        try {
          const frame = await source.getFrame(i);
          assert.ok(frame.equals(video.frames[i] as Buffer), `buffered frame ${i}`);
        } catch (error) {
          videoError(
            'invalid_video',
            new RegExp(`^the video decoder failed at frame ${i}$`),
          )(error);
          failedAt = i;
        }
      }
      assert.ok(failedAt > 5, 'the kill surfaced as an error');
      await assertFrames(source, [failedAt, failedAt + 1], video.frames, 'after the kill');
      assert.equal(source.stats().decodersStarted, 2);
    } finally {
      await source.close();
    }
  });

  it('a stalled decoder is killed at the deadline with a clear error', async () => {
    const video = await writeVideo(dir, 'mkv-ffv1', { frames: 4 }, 'stall');
    const info = await probeVideo(video.file, LIMITS);
    // ffmpeg blocks opening a FIFO that nobody writes to.
    const fifo = path.join(dir, 'stalls.mkv');
    await promisify(execFile)('mkfifo', [fifo]);
    const source = await FrameSource.open(fifo, info, {
      windowFrames: 2,
      stallTimeoutMs: 300,
      verifyFirstFrame: false,
    });
    try {
      await assert.rejects(
        source.getFrame(0),
        videoError('invalid_video', /^decoding frame 0 took longer than 0.3 s$/),
      );
    } finally {
      await source.close();
    }
    assert.deepEqual([source.stats().liveDecoders, (await ffmpegChildren()).length], [0, 0]);
  });

  it('close() kills its decoders, frees the window and fails calls, pending ones too', async () => {
    const video = await writeVideo(dir, 'mkv-ffv1', { frames: 60 }, 'close');
    const info = await probeVideo(video.file, LIMITS);
    const source = await FrameSource.open(video.file, info, { windowFrames: 4 });
    await assertFrames(source, [1, 2], video.frames, 'open');
    assert.equal((await ffmpegChildren()).length, 1);
    const pending = source.getFrame(40);
    await source.close();
    await assert.rejects(pending, videoError('not_found', /^the video session was closed$/));
    await assert.rejects(
      source.getFrame(3),
      videoError('not_found', /^the video session was closed$/),
    );
    const { liveDecoders, framesHeld, bytesHeld } = source.stats();
    assert.deepEqual(
      { liveDecoders, framesHeld, bytesHeld },
      { liveDecoders: 0, framesHeld: 0, bytesHeld: 0 },
    );
    assert.deepEqual(await ffmpegChildren(), []);
    await source.close(); // idempotent
  });

  it('open() refuses a video whose decoder yields no frame', async () => {
    // ffprobe would refuse this codec; give FrameSource a probe of a sound file to see that
    // the decode check stands on its own.
    const sound = await writeVideo(dir, 'avi-mjpeg', { frames: 5 }, 'sound');
    const info: VideoInfo = await probeVideo(sound.file, LIMITS);
    const unknown = await writeUnknownCodecAvi(dir);
    await assert.rejects(
      FrameSource.open(unknown, info, { windowFrames: 2 }),
      videoError('no_decodable_frames', /^no frame of the video could be decoded$/),
    );
    assert.deepEqual(await ffmpegChildren(), []);
  });

  it('a missing ffmpeg is a tool error; an index out of range a RangeError', async () => {
    const video = await writeVideo(dir, 'mkv-ffv1', { frames: 3 }, 'tool');
    const info = await probeVideo(video.file, LIMITS);
    await assert.rejects(
      FrameSource.open(video.file, info, { windowFrames: 2, ffmpegPath: '/nonexistent/ffmpeg' }),
      (error: unknown) => error instanceof VideoToolError && /could not be run/.test(error.message),
    );
    const source = await FrameSource.open(video.file, info, { windowFrames: 2 });
    try {
      for (const index of [-1, 3, 1.5, Number.NaN]) {
        await assert.rejects(source.getFrame(index), RangeError);
      }
    } finally {
      await source.close();
    }
  });
});
