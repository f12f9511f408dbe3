/**
 * Admission control for the model requests of one device (SPEC.md MAX_CONCURRENT_REQUESTS):
 * at most `maxRunning` requests in progress at once (decode, model calls, encoding the
 * answer), at most `maxQueued` waiting behind them in arrival order, and beyond that a refusal
 * at once (OverloadedError: 429 `overloaded` with a Retry-After estimate). Memory then follows
 * from the configuration, not from the number of clients: a waiting request holds only its
 * body, a running one at most one decoded image.
 *
 * Work of a client that went away is dropped: a waiting request whose signal aborts leaves
 * the queue without running, and a running one checks its signal between stages
 * (`throwIfCancelled`), so at most the stage in progress is computed for nobody.
 */
import { performance } from 'node:perf_hooks';

/** Refused because the device's queue is full; `retryAfterSeconds` estimates when to retry. */
export class OverloadedError extends Error {
  override readonly name = 'OverloadedError';
  readonly code = 'overloaded';
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/** The client of a request went away; nothing is answered. */
export class RequestCancelledError extends Error {
  override readonly name = 'RequestCancelledError';
  constructor(stage: string) {
    super(`the client went away (${stage})`);
  }
}

/** Throws RequestCancelledError when `signal` has aborted; `stage` says what is skipped. */
export function throwIfCancelled(signal: AbortSignal | undefined, stage: string): void {
  if (signal?.aborted === true) throw new RequestCancelledError(stage);
}

/**
 * `promise`, or RequestCancelledError as soon as `signal` aborts (`stage` says what was
 * waited for); the promise itself goes on (its outcome is then ignored).
 */
export function untilAborted<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  stage: string,
): Promise<T> {
  if (signal === undefined) return promise;
  throwIfCancelled(signal, stage);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new RequestCancelledError(stage));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

export interface AdmissionOptions {
  /** Requests in progress at once (>= 1). */
  maxRunning: number;
  /** Requests waiting for a place (>= 0). */
  maxQueued: number;
  /** What the refusal message names, e.g. "the image model on cuda:0". */
  name: string;
}

export interface AdmissionStats {
  running: number;
  queued: number;
  /** Requests admitted (run) so far. */
  admitted: number;
  /** Requests refused because the queue was full. */
  rejected: number;
  /** Waiting requests dropped because their client went away. */
  cancelled: number;
}

interface Waiter {
  admit: () => void;
  onAbort: () => void;
}

/** Bounds of the Retry-After estimate, seconds. */
const MIN_RETRY_SECONDS = 1;
const MAX_RETRY_SECONDS = 60;
/** Weight of the newest request in the running mean of service times. */
const SERVICE_TIME_WEIGHT = 0.2;

export class Admission {
  private running = 0;
  private readonly queue: Waiter[] = [];
  private readonly counts = { admitted: 0, rejected: 0, cancelled: 0 };
  /** Running mean of how long an admitted request holds its place, ms. */
  private serviceMs = 1000;

  constructor(private readonly options: AdmissionOptions) {
    if (!(options.maxRunning >= 1) || !(options.maxQueued >= 0)) {
      throw new RangeError('maxRunning must be >= 1 and maxQueued >= 0');
    }
  }

  /**
   * Runs `work` once a place is free. Rejects at once with OverloadedError when the queue is
   * full, and with RequestCancelledError when `signal` aborts before the place comes.
   */
  async run<T>(signal: AbortSignal | undefined, work: () => Promise<T>): Promise<T> {
    throwIfCancelled(signal, 'before admission');
    await this.enter(signal);
    const started = performance.now();
    try {
      return await work();
    } finally {
      const ms = performance.now() - started;
      this.serviceMs += SERVICE_TIME_WEIGHT * (ms - this.serviceMs);
      this.leave();
    }
  }

  /**
   * Refuses now (throws OverloadedError, counted as rejected) when a request arriving now
   * could neither run nor wait: lets a caller refuse before it reads the request's body.
   */
  refuseIfFull(): void {
    if (this.running < this.options.maxRunning || this.queue.length < this.options.maxQueued) {
      return;
    }
    throw this.refusal();
  }

  stats(): AdmissionStats {
    return { running: this.running, queued: this.queue.length, ...this.counts };
  }

  private enter(signal: AbortSignal | undefined): Promise<void> {
    if (this.running < this.options.maxRunning && this.queue.length === 0) {
      this.running += 1;
      this.counts.admitted += 1;
      return Promise.resolve();
    }
    if (this.queue.length >= this.options.maxQueued) throw this.refusal();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        admit: () => {
          signal?.removeEventListener('abort', waiter.onAbort);
          this.running += 1;
          this.counts.admitted += 1;
          resolve();
        },
        onAbort: () => {
          const index = this.queue.indexOf(waiter);
          if (index >= 0) this.queue.splice(index, 1);
          this.counts.cancelled += 1;
          reject(new RequestCancelledError('while waiting for admission'));
        },
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      this.queue.push(waiter);
    });
  }

  private refusal(): OverloadedError {
    this.counts.rejected += 1;
    const { maxRunning, maxQueued, name } = this.options;
    return new OverloadedError(
      `${name} is busy: ${maxRunning} requests running and ${maxQueued} waiting ` +
        '(MAX_CONCURRENT_REQUESTS, MAX_QUEUED_REQUESTS); retry later',
      this.retryAfterSeconds(),
    );
  }

  private leave(): void {
    this.running -= 1;
    const next = this.queue.shift();
    if (next !== undefined) next.admit();
  }

  /** Time until the queue ahead of a new request drains, at the mean service time. */
  private retryAfterSeconds(): number {
    const ahead = this.queue.length + this.running;
    const seconds = Math.ceil((ahead * this.serviceMs) / this.options.maxRunning / 1000);
    return Math.min(MAX_RETRY_SECONDS, Math.max(MIN_RETRY_SECONDS, seconds));
  }
}
