/**
 * probeVideo on real files written by ffmpeg: what it reports for each accepted container,
 * and how it refuses the hostile videos of SECURITY.md row 10 and the playlists of row 4
 * before anything is decoded.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { VideoInputError, VideoToolError } from '../../../src/engine/video/errors';
import { probeVideo, type ProbeOptions } from '../../../src/engine/video/probe';
import {
  VIDEO_KINDS,
  makeTempDir,
  removeDir,
  writeBrokenMoovMp4,
  writeConcatScript,
  writeEditListMp4,
  writeFrameCountLieAvi,
  writeGarbage,
  writeHlsPlaylist,
  writeHugeDeclaredMkv,
  writeLongDeclaredMkv,
  writeMoovlessMp4,
  writeRotatedMp4,
  writeStreamlessMp4,
  writeTruncatedMp4,
  writeTsSegment,
  writeUnknownCodecAvi,
  writeVideo,
  writeZeroFrameAvi,
} from '../../helpers/videos';

const LIMITS: ProbeOptions = { maxFrames: 1000, maxPixels: 3840 * 2160, maxDurationSeconds: 3600 };

/** A rejection predicate: a VideoInputError with `code` and a message matching `message`. */
function videoError(code: string, message: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof VideoInputError, `expected a VideoInputError, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    return true;
  };
}

const CODECS: Record<string, { codec: string; format: string }> = {
  'mp4-x264rgb': { codec: 'h264', format: 'mov' },
  'mkv-ffv1': { codec: 'ffv1', format: 'matroska' },
  'webm-vp9': { codec: 'vp9', format: 'matroska' },
  'mov-h264': { codec: 'h264', format: 'mov' },
  'avi-mjpeg': { codec: 'mjpeg', format: 'avi' },
};

describe('probeVideo', () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir();
  });
  after(async () => {
    await removeDir(dir);
  });

  for (const kind of VIDEO_KINDS) {
    it(`reads frames, rate, size, duration, codec and demuxer of ${kind}`, async () => {
      const video = await writeVideo(dir, kind, { width: 64, height: 48, frames: 24, fps: 10 });
      const info = await probeVideo(video.file, LIMITS);
      assert.deepEqual(
        {
          totalFrames: info.totalFrames,
          fps: info.fps,
          width: info.width,
          height: info.height,
          durationSeconds: info.durationSeconds,
          codec: info.codec,
          format: info.format,
          streamIndex: info.streamIndex,
          timelineFrames: info.timeline.length,
        },
        {
          totalFrames: 24,
          fps: 10,
          width: 64,
          height: 48,
          durationSeconds: 2.4,
          ...CODECS[kind],
          streamIndex: 0,
          timelineFrames: 24,
        },
      );
      assert.equal(info.timeline.seconds(0), 0);
      assert.ok(Math.abs(info.timeline.seconds(23) - 2.3) < 1e-3);
      assert.ok(Math.abs(info.timeline.seekSeconds(1) - 0.05) < 1e-3);
      assert.equal(JSON.stringify(info.timeline), '{"frames":24}');
    });
  }

  it('accepts a 1-frame video', async () => {
    const video = await writeVideo(dir, 'mkv-ffv1', { frames: 1 }, 'one-frame');
    const info = await probeVideo(video.file, LIMITS);
    assert.equal(info.totalFrames, 1);
  });

  it('counts the frames a decode gives, not the packets an edit list discards', async () => {
    const video = await writeEditListMp4(dir);
    const { stdout } = await promisify(execFile)('ffprobe', [
      ...['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=nb_frames'],
      ...['-of', 'csv=p=0', video.file],
    ]);
    assert.equal(stdout.trim(), '30', 'the header counts every packet');
    const info = await probeVideo(video.file, LIMITS);
    assert.equal(info.totalFrames, 26);
  });

  it('reports the displayed size of a rotated video', async () => {
    const video = await writeRotatedMp4(dir, 90);
    const info = await probeVideo(video.file, LIMITS);
    assert.deepEqual([info.width, info.height], [48, 64]);
  });

  it('picks the video stream of a file with audio', async () => {
    const video = await writeVideo(dir, 'mkv-ffv1', { audio: true, frames: 12 }, 'with-audio');
    const info = await probeVideo(video.file, LIMITS);
    assert.deepEqual([info.totalFrames, info.streamIndex], [12, 0]);
  });

  describe('refuses hostile videos (SECURITY.md row 10)', () => {
    it('0 frames: a stream without frames, a file without streams', async () => {
      await assert.rejects(
        probeVideo(await writeZeroFrameAvi(dir), LIMITS),
        videoError('no_decodable_frames', /^the video has no frames$/),
      );
      await assert.rejects(
        probeVideo(await writeStreamlessMp4(dir), LIMITS),
        videoError('no_decodable_frames', /^the file has no video stream$/),
      );
    });

    it('a header claiming 2^31 frames, from the header', async () => {
      const file = await writeFrameCountLieAvi(dir, 2 ** 31);
      await assert.rejects(
        probeVideo(file, { ...LIMITS, maxFrames: 100_000 }),
        videoError(
          'video_limits_exceeded',
          /^the video declares 2147483648 frames; the limit is 100000 frames$/,
        ),
      );
    });

    it('more frames than the limit, counted when the header says nothing', async () => {
      const video = await writeVideo(dir, 'webm-vp9', { frames: 30 }, 'thirty');
      await assert.rejects(
        probeVideo(video.file, { ...LIMITS, maxFrames: 29 }),
        videoError('video_limits_exceeded', /^the video has more than 29 frames \(the limit\)$/),
      );
      assert.equal((await probeVideo(video.file, { ...LIMITS, maxFrames: 30 })).totalFrames, 30);
    });

    it('16K x 16K declared, without decoding a frame of it', async () => {
      for (const side of [16384, 16000]) {
        const file = await writeHugeDeclaredMkv(dir, side);
        await assert.rejects(
          probeVideo(file, LIMITS),
          videoError(
            'video_limits_exceeded',
            new RegExp(
              `^the video's frames are ${side}x${side} \\(${side * side} pixels\\); ` +
                `the limit is 8294400 pixels per frame$`,
            ),
          ),
        );
      }
    });

    it('a frame size over a small pixel limit', async () => {
      const video = await writeVideo(dir, 'mp4-x264rgb', { width: 64, height: 48 }, 'small');
      await assert.rejects(
        probeVideo(video.file, { ...LIMITS, maxPixels: 64 * 48 - 1 }),
        videoError('video_limits_exceeded', /^the video's frames are 64x48 \(3072 pixels\)/),
      );
    });

    it('hours long declared', async () => {
      const file = await writeLongDeclaredMkv(dir, 3 * 3600);
      await assert.rejects(
        probeVideo(file, LIMITS),
        videoError('video_limits_exceeded', /^the video declares 10801 s; the limit is 3600 s$/),
      );
    });

    it('a broken moov: cut off entirely, or cut in the middle', async () => {
      await assert.rejects(
        probeVideo(await writeMoovlessMp4(dir), LIMITS),
        videoError('invalid_video', /^the file is not a video this server can read/),
      );
      await assert.rejects(
        probeVideo(await writeBrokenMoovMp4(dir), LIMITS),
        videoError('no_decodable_frames', /^the file has no video stream$/),
      );
    });

    it('a truncated file keeps the frames that are there', async () => {
      const { file } = await writeTruncatedMp4(dir, 20, 0.5);
      const info = await probeVideo(file, LIMITS);
      assert.equal(info.totalFrames, 9);
    });

    it('an unknown codec', async () => {
      await assert.rejects(
        probeVideo(await writeUnknownCodecAvi(dir), LIMITS),
        videoError(
          'no_decodable_frames',
          /^the video stream is in a codec this server cannot decode$/,
        ),
      );
    });

    it('garbage bytes and an empty file', async () => {
      await assert.rejects(
        probeVideo(await writeGarbage(dir), LIMITS),
        videoError(
          'invalid_video',
          /^the file is not a video this server can read \(MP4\/MOV, Matroska\/WebM or AVI\)$/,
        ),
      );
      const empty = await writeGarbage(dir, 0);
      await assert.rejects(
        probeVideo(empty, LIMITS),
        videoError('invalid_video', /^the file is not a video this server can read/),
      );
    });
  });

  describe('refuses playlists and scripts before their demuxer reads them (row 4)', () => {
    it('an HLS playlist pointing at file:///etc/passwd', async () => {
      const file = await writeHlsPlaylist(dir);
      await assert.rejects(
        probeVideo(file, LIMITS),
        videoError(
          'invalid_video',
          /^the container format hls is not accepted; send MP4\/MOV, Matroska\/WebM or AVI$/,
        ),
      );
    });

    it('a playable HLS playlist (ffprobe alone would open its segment)', async () => {
      const segment = await writeTsSegment(dir);
      const file = await writeHlsPlaylist(dir, `file://${segment}`, 'playable.m3u8');
      const { stdout } = await promisify(execFile)('ffprobe', [
        ...['-v', 'error', '-protocol_whitelist', 'file', '-show_entries', 'format=format_name'],
        ...['-of', 'csv=p=0', file],
      ]);
      assert.equal(stdout.trim(), 'hls', 'without the allowlist the playlist is read');
      await assert.rejects(
        probeVideo(file, LIMITS),
        videoError('invalid_video', /^the container format hls is not accepted/),
      );
    });

    it('an ffconcat script', async () => {
      const video = await writeVideo(dir, 'mkv-ffv1', {}, 'listed');
      const file = await writeConcatScript(dir, video.file);
      await assert.rejects(
        probeVideo(file, LIMITS),
        videoError('invalid_video', /^the container format concat is not accepted/),
      );
    });

    it('a file whose name looks like a protocol', async () => {
      const video = await writeVideo(dir, 'mkv-ffv1', { frames: 2 }, 'concat:x|y');
      const info = await probeVideo(video.file, LIMITS);
      assert.equal(info.totalFrames, 2);
    });
  });

  it('a missing ffprobe is a tool error, not the client’s', async () => {
    const video = await writeVideo(dir, 'mkv-ffv1', { frames: 2 }, 'tool');
    await assert.rejects(
      probeVideo(video.file, { ...LIMITS, ffprobePath: '/nonexistent/ffprobe' }),
      (error: unknown) => error instanceof VideoToolError && /could not be run/.test(error.message),
    );
  });
});
