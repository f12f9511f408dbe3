/**
 * The Node HTTP server around the Express app: timeouts from the configuration (slowloris
 * and idle-socket protection), WebSocket upgrades routed through the app (ws.ts), listening,
 * and graceful shutdown.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RequestListener } from 'node:http';
import type { Config } from '../config';
import { attachUpgrades } from './ws';

/** Longest wait for a request's headers (bounded by the whole-request timeout). */
const HEADERS_TIMEOUT_MS = 60_000;
/** Idle keep-alive sockets are closed after this (Node's default, stated so it is a choice). */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;

/** How often a closing server looks for keep-alive sockets that became idle. */
const IDLE_SWEEP_MS = 100;

export function createHttpServer(app: RequestListener, config: Readonly<Config>): http.Server {
  const requestTimeout = config.requestTimeoutSeconds * 1000;
  const server = http.createServer(
    {
      requestTimeout,
      headersTimeout: Math.min(HEADERS_TIMEOUT_MS, requestTimeout),
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    },
    app,
  );
  attachUpgrades(server, app);
  return server;
}

/** Resolves with the bound address once listening; rejects on EADDRINUSE and the like. */
export function listen(server: http.Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => reject(error);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/**
 * Stops accepting connections, lets in-flight requests finish for up to `deadlineMs`, then
 * closes whatever sockets remain. Resolves when the server is closed.
 */
export function closeGracefully(server: http.Server, deadlineMs: number): Promise<void> {
  return new Promise((resolve) => {
    const deadline = setTimeout(() => server.closeAllConnections(), deadlineMs);
    // Keep-alive sockets would hold close() open until their idle timeout: close each one as
    // soon as it has no request in flight (now, and after each in-flight response).
    const sweep = setInterval(() => server.closeIdleConnections(), IDLE_SWEEP_MS);
    server.close(() => {
      clearTimeout(deadline);
      clearInterval(sweep);
      resolve();
    });
    server.closeIdleConnections();
  });
}
