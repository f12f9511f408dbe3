/**
 * Errors of getting a video into a session: reading the input (path, base64, upload, URL),
 * probing it and decoding its frames.
 *
 * `VideoInputError` is the client's problem and its message is safe to show: it never holds a
 * path, an address or ffmpeg's own words (those go to `detail`, for the server's log).
 * `VideoToolError` is the server's: ffmpeg or ffprobe could not be run at all.
 */

/** API error codes (docs/video-internals.md section 4) a video input can fail with. */
export type VideoInputErrorCode =
  | 'invalid_base64' // video_base64 is not strict base64
  | 'url_not_allowed' // video_url: address, credentials, parser tricks, redirects
  | 'unsupported_scheme' // video_url: not http or https
  | 'path_not_allowed' // video_path: outside the roots, traversal, not a regular file
  | 'not_found' // video_path names nothing; or the frame source was closed
  | 'payload_too_large' // the video is larger than MAX_UPLOAD_SIZE_MB
  | 'invalid_video' // not a container we read, or the decoder failed on it
  | 'no_decodable_frames' // a readable container without a decodable video frame
  | 'video_limits_exceeded' // frames, pixels or duration over the configured limits
  | 'download_failed' // video_url: the far side failed (HTTP status, connection)
  | 'download_timeout'; // video_url: the whole download took longer than allowed

export class VideoInputError extends Error {
  override readonly name = 'VideoInputError';
  /** What the server logs beside the message (e.g. ffmpeg's stderr); never sent. */
  readonly detail: string | undefined;
  constructor(
    readonly code: VideoInputErrorCode,
    message: string,
    options?: { cause?: unknown; detail?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.detail = options?.detail;
  }
}

/** ffmpeg/ffprobe missing or not runnable: a server fault (500), logged in full. */
export class VideoToolError extends Error {
  override readonly name = 'VideoToolError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
