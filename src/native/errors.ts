/**
 * NativeError: the one error type the native layer raises to TypeScript. The addon rejects
 * with plain Errors carrying a `code` (set in native/binding from core exceptions); the loader
 * (src/native/addon.ts) converts them here so callers see a NativeError with their own stack.
 */
import type { NativeErrorCode } from './types';

const NATIVE_ERROR_CODES: ReadonlySet<string> = new Set<NativeErrorCode>([
  'MODEL_LOAD',
  'BAD_INPUT',
  'DEVICE_OOM',
  'DEVICE_UNAVAILABLE',
  'ENGINE_CLOSED',
  'SESSION_CLOSED',
  'CANCELLED',
  'INTERNAL',
]);

export function isNativeErrorCode(value: unknown): value is NativeErrorCode {
  return typeof value === 'string' && NATIVE_ERROR_CODES.has(value);
}

export class NativeError extends Error {
  readonly code: NativeErrorCode;

  constructor(code: NativeErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NativeError';
    this.code = code;
  }
}

/** A stack captured before a native call, to give asynchronous native errors a useful stack. */
export interface CallSite {
  stack?: string;
}

/**
 * Converts what the addon threw or rejected with into a NativeError. An unknown code (or
 * none) becomes INTERNAL. With `site`, the error's stack is the caller's, captured before the
 * call went native (an async rejection otherwise has no JS frames at all).
 */
export function toNativeError(error: unknown, site?: CallSite): NativeError {
  if (error instanceof NativeError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  const converted = new NativeError(isNativeErrorCode(code) ? code : 'INTERNAL', message, {
    cause: error,
  });
  if (site?.stack !== undefined) {
    const frames = site.stack.split('\n').slice(1).join('\n');
    converted.stack = `${converted.name} [${converted.code}]: ${message}\n${frames}`;
  }
  return converted;
}

/**
 * Calls into the addon and converts any failure (a synchronous throw or a rejection) into a
 * NativeError whose stack shows where the call was made.
 */
export async function callNative<T>(call: () => Promise<T>): Promise<T> {
  const site: CallSite = {};
  Error.captureStackTrace(site, callNative);
  try {
    return await call();
  } catch (error) {
    throw toNativeError(error, site);
  }
}
