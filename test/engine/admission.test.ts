/** Admission control: bounded running and waiting requests, refusal, cancellation (admission.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Admission,
  OverloadedError,
  RequestCancelledError,
  throwIfCancelled,
} from '../../src/engine/admission';

/** A promise and the function that settles it. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open = (): void => {};
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('Admission', () => {
  it('runs at most maxRunning at once, the rest in arrival order, and refuses beyond the queue', async () => {
    const admission = new Admission({ maxRunning: 2, maxQueued: 2, name: 'the test device' });
    const gates = [gate(), gate(), gate(), gate()];
    const started: number[] = [];
    const runs = gates.map((g, i) =>
      admission.run(undefined, async () => {
        started.push(i);
        await g.promise;
        return i;
      }),
    );
    await tick();
    assert.deepEqual(started, [0, 1]);
    assert.deepEqual(admission.stats(), {
      running: 2,
      queued: 2,
      admitted: 2,
      rejected: 0,
      cancelled: 0,
    });
    await assert.rejects(
      admission.run(undefined, async () => 'never'),
      (error: unknown) =>
        error instanceof OverloadedError &&
        error.code === 'overloaded' &&
        error.retryAfterSeconds >= 1 &&
        error.message ===
          'the test device is busy: 2 requests running and 2 waiting ' +
            '(MAX_CONCURRENT_REQUESTS, MAX_QUEUED_REQUESTS); retry later',
    );
    gates[1].open();
    await tick();
    assert.deepEqual(started, [0, 1, 2], 'the first waiting request takes the freed place');
    gates[0].open();
    gates[2].open();
    gates[3].open();
    assert.deepEqual(await Promise.all(runs), [0, 1, 2, 3]);
    assert.deepEqual(admission.stats(), {
      running: 0,
      queued: 0,
      admitted: 4,
      rejected: 1,
      cancelled: 0,
    });
  });

  it('drops a waiting request whose client went away, without running it', async () => {
    const admission = new Admission({ maxRunning: 1, maxQueued: 4, name: 'd' });
    const busy = gate();
    const first = admission.run(undefined, () => busy.promise);
    const cancel = new AbortController();
    let ran = false;
    const waiting = admission.run(cancel.signal, async () => {
      ran = true;
    });
    await tick();
    assert.equal(admission.stats().queued, 1);
    cancel.abort();
    await assert.rejects(waiting, RequestCancelledError);
    assert.deepEqual(admission.stats(), {
      running: 1,
      queued: 0,
      admitted: 1,
      rejected: 0,
      cancelled: 1,
    });
    busy.open();
    await first;
    assert.equal(ran, false);
    // A signal aborted before the call is refused before it queues.
    await assert.rejects(
      admission.run(AbortSignal.abort(), async () => undefined),
      RequestCancelledError,
    );
    assert.equal(admission.stats().admitted, 1);
  });

  it('frees the place of a request that failed', async () => {
    const admission = new Admission({ maxRunning: 1, maxQueued: 0, name: 'd' });
    await assert.rejects(
      admission.run(undefined, async () => {
        throw new Error('model failed');
      }),
      /model failed/,
    );
    assert.equal(await admission.run(undefined, async () => 'next'), 'next');
    assert.equal(admission.stats().running, 0);
  });

  it('throwIfCancelled names the stage skipped', () => {
    throwIfCancelled(undefined, 'x');
    throwIfCancelled(new AbortController().signal, 'x');
    assert.throws(
      () => throwIfCancelled(AbortSignal.abort(), 'before detection'),
      (error: unknown) =>
        error instanceof RequestCancelledError &&
        error.message === 'the client went away (before detection)',
    );
  });

  it('refuses limits that admit nothing', () => {
    assert.throws(() => new Admission({ maxRunning: 0, maxQueued: 1, name: 'd' }), RangeError);
    assert.throws(() => new Admission({ maxRunning: 1, maxQueued: -1, name: 'd' }), RangeError);
  });
});
