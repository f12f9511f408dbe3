/**
 * The errors of video session state and admission (VideoSessions). Their messages are meant
 * for the client; `code` is the API error code (SPEC.md, docs/video-internals.md section 4).
 */
export type VideoSessionErrorCode =
  | 'not_found'
  | 'session_exists'
  | 'session_busy'
  | 'too_many_objects'
  | 'too_many_sessions'
  | 'invalid_device'
  | 'invalid_request'
  | 'not_ready';

export class VideoSessionError extends Error {
  override readonly name = 'VideoSessionError';
  constructor(
    readonly code: VideoSessionErrorCode,
    message: string,
    /** For too_many_sessions: seconds after which a retry may find a free slot. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

/** Seconds a client refused for too many sessions is told to wait. */
export const SESSION_RETRY_AFTER_SECONDS = 5;
