/**
 * Request bodies refused on their declared size, before a byte of them is read.
 *
 * body-parser checks Content-Length up front but then reads (and discards) the whole body
 * before answering its 413, and multer counts only the file's bytes as they arrive; neither
 * answers a 200 MB upload without receiving it. This middleware runs before both: a declared
 * Content-Length over the limit of its kind is a 413 at once (the error handler closes the
 * connection, since the body is left unread). A request that sent `Expect: 100-continue` is
 * told to continue only here, after the access controls and this check passed, so a refused
 * client never sends its body at all (http-server.ts routes 'checkContinue' to the app).
 */
import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import { ApiError } from './errors';

const BYTES_PER_MB = 1024 * 1024;
/**
 * Room for a multipart form's boundaries, part headers and small fields around the file that
 * MAX_UPLOAD_SIZE_MB bounds (multer's own limits still apply to each part).
 */
export const MULTIPART_OVERHEAD_BYTES = 1024 * 1024;

/** Requests whose client waits for `100 Continue` (marked by the HTTP server). */
const awaitingContinue = new WeakSet<IncomingMessage>();

/** Called by the HTTP server's 'checkContinue' listener: the app decides when to continue. */
export function markAwaitingContinue(req: IncomingMessage): void {
  awaitingContinue.add(req);
}

export interface BodyLimits {
  /** MAX_JSON_BODY_MB: every body but a multipart form. */
  maxJsonBodyMb: number;
  /** MAX_UPLOAD_SIZE_MB: the file of a multipart form (the form may add MULTIPART_OVERHEAD_BYTES). */
  maxUploadSizeMb: number;
}

/** The declared-size check (and the `100 Continue`), for every route. */
export function declaredBodyLimit(limits: BodyLimits): RequestHandler {
  const jsonBytes = Math.floor(limits.maxJsonBodyMb * BYTES_PER_MB);
  const uploadBytes = Math.floor(limits.maxUploadSizeMb * BYTES_PER_MB) + MULTIPART_OVERHEAD_BYTES;
  return (req, res, next) => {
    const declared = req.headers['content-length'];
    // Node's parser already refused a Content-Length that is not a single decimal number.
    if (declared !== undefined) {
      const bytes = Number(declared);
      const multipart = typeof req.is('multipart/form-data') === 'string';
      const limit = multipart ? uploadBytes : jsonBytes;
      if (bytes > limit) {
        throw new ApiError(
          'payload_too_large',
          multipart
            ? `the upload is larger than ${limits.maxUploadSizeMb} MB (MAX_UPLOAD_SIZE_MB)`
            : `request body is larger than ${limits.maxJsonBodyMb} MB (MAX_JSON_BODY_MB)`,
        );
      }
    }
    if (awaitingContinue.has(req)) {
      awaitingContinue.delete(req);
      res.writeContinue();
    }
    next();
  };
}
