/** Shared pieces of the native addon tests. */
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { NativeError } from '../../src/native/errors';
import type { NativeErrorCode } from '../../src/native/types';

/** An assert.rejects predicate: a NativeError with this code (and message, if given). */
export function expectCode(code: NativeErrorCode, message?: RegExp): (error: unknown) => boolean {
  return (error: unknown) => {
    assert.ok(error instanceof NativeError, `expected a NativeError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  };
}

/**
 * Full garbage collections (the test runner does not pass --expose-gc), each followed by a
 * turn of the event loop so that native finalizers run.
 */
export async function collectGarbage(rounds = 5): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  for (let round = 0; round < rounds; round++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
}
