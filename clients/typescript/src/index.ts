/**
 * @sam3/client: a typed client of the SAM3 inference server (HTTP and WebSocket), for
 * browsers and Node 20+. Types are generated from the server's OpenAPI document (api-types.ts).
 */
export {
  Sam3Client,
  type RequestOptions,
  type Sam3ClientOptions,
  type StartSessionSource,
  type VideoUpload,
} from './client';
export {
  Sam3ApiError,
  isApiErrorCode,
  statusOfErrorCode,
  type ClientErrorCode,
  type Sam3ApiErrorInit,
  type Sam3ErrorCode,
} from './errors';
export { decodeRle, rleRuns, RleDecodeError, type Bitmap } from './rle';
export { toBase64 } from './base64';
export {
  WS_KEY_PROTOCOL_PREFIX,
  WS_PROTOCOL,
  type WebSocketEventLike,
  type WebSocketInstanceLike,
  type WebSocketLike,
} from './websocket';
export {
  errorStatuses,
  type ErrorCode,
  type components,
  type paths,
  type operations,
} from './api-types';
export type * from './types';
