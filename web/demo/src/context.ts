/** What the page's views share: the client, error reporting, element lookup. */
import { Sam3ApiError, type Sam3Client } from '../../../clients/typescript/src/index';

export interface DemoContext {
  /** A client with the key currently typed in the page. */
  client(): Sam3Client;
  /** Shows a failed call (a cancelled one is not an error). */
  reportError(error: unknown): void;
  clearError(): void;
}

export function byId<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`the page has no #${id}`);
  return element as T;
}

export function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === 'AbortError';
}

export function describeError(error: unknown): string {
  if (error instanceof Sam3ApiError) {
    const hint = error.status === 401 ? ' (this server requires an API key: enter it above)' : '';
    const retry =
      error.retryAfterSeconds === null ? '' : ` (retry in ${error.retryAfterSeconds} s)`;
    return `${error.code}: ${error.message}${hint}${retry}`;
  }
  return error instanceof Error ? error.message : String(error);
}
