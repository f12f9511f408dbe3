/**
 * Entry point: configuration, logger, HTTP server first (so /health answers "loading"), then
 * the model in the background; SIGTERM/SIGINT close WebSockets (1001), drain in-flight
 * requests, close every video session and the engines. A model that fails to load leaves the
 * server up and degraded, unless IMAGE_MODEL_REQUIRED / VIDEO_MODEL_REQUIRED make that an exit
 * (code 1, for a supervisor to restart); an explicit IMAGE_MODEL_RESOLUTION the bundle does not
 * have always is.
 */
import path from 'node:path';
import { activeAllocator } from './allocator';
import { ConfigError, loadConfig, readEnvironment, type Config, type RuntimeInfo } from './config';
import { Models } from './engine/models';
import { batchingMismatch, compileMismatch, resolutionMismatch } from './engine/segmenter';
import { VisualizationStore } from './engine/visualization';
import { chooseLogFormat, createLogger, type Logger } from './logging';
import { loadAddon } from './native/addon';
import type { NativeAddon } from './native/types';
import { createApp } from './server/app';
import { EngineState } from './server/engine-state';
import { closeGracefully, createHttpServer, listen } from './server/http-server';
import { ServerMetrics, startMetricsServer } from './server/metrics';
import { PropagationSockets } from './server/ws';

/** The addon, if it loads; its runtime info decides the device defaults of the config. */
function probeAddon(): { addon: NativeAddon | null; error: unknown; cudaDeviceCount: number } {
  try {
    const addon = loadAddon();
    return { addon, error: null, cudaDeviceCount: addon.runtimeInfo().cudaDeviceCount };
  } catch (error) {
    return { addon: null, error, cudaDeviceCount: 0 };
  }
}

interface Running {
  server: ReturnType<typeof createHttpServer>;
  /** The metrics listener (ENABLE_METRICS), closed with the API server. */
  metricsServer: ReturnType<typeof createHttpServer> | null;
  engineState: EngineState;
  webSockets: PropagationSockets;
  visualizations: VisualizationStore;
}

/** Stops in order: no new work, sockets closed (1001), HTTP drained, sessions and engines. */
async function shutDown(running: Running, deadlineMs: number): Promise<void> {
  running.engineState.markStopping();
  await running.webSockets.closeAll();
  await closeGracefully(running.server, deadlineMs);
  if (running.metricsServer !== null) await closeGracefully(running.metricsServer, 0);
  await running.engineState.close();
  running.visualizations.close();
}

function installShutdown(running: Running, deadlineMs: number, logger: Logger): void {
  let stopping = false;
  const stop = async (signal: NodeJS.Signals): Promise<void> => {
    if (stopping) {
      logger.warn(`${signal} again: exiting now`);
      process.exit(1);
    }
    stopping = true;
    logger.info(`${signal}: no new requests; draining in-flight ones for up to ${deadlineMs} ms`);
    await shutDown(running, deadlineMs);
    logger.info('stopped');
    process.exit(0);
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, (received) => {
      stop(received).catch((error: unknown) => {
        logger.error(`shutdown failed: ${(error as Error).message}`);
        process.exit(1);
      });
    });
  }
}

/** Why the server must exit after loading the models (see the header), or null. */
function startupFailure(config: Readonly<Config>, models: Models): string | null {
  // A shutdown under way decides the exit code itself.
  if (models.imageStatus === 'stopping') return null;
  const manifest = models.manifest;
  // A bad variable, not a failed load: fatal as every other configuration error.
  const mismatch =
    manifest === null
      ? null
      : ((config.imageModelEnabled
          ? (resolutionMismatch(config.imageModelResolution, manifest.resolution) ??
            batchingMismatch(config.imageModelBatchSize, manifest))
          : null) ?? compileMismatch(config, manifest));
  if (mismatch !== null) return mismatch;
  if (config.imageModelRequired && models.imageStatus !== 'ready') {
    return 'IMAGE_MODEL_REQUIRED is true but the image model failed to load (see the log)';
  }
  if (config.videoModelRequired && models.videoStatus !== 'ready') {
    const reason =
      models.videoStatus === 'disabled'
        ? 'VIDEO_MODEL_ENABLED is false'
        : (models.videoReason ?? 'the video model did not load');
    return `VIDEO_MODEL_REQUIRED is true but video sessions cannot be served: ${reason}`;
  }
  return null;
}

async function main(): Promise<void> {
  const env = await readEnvironment(process.env, path.resolve('.env'));
  const probe = probeAddon();
  const allocator = activeAllocator();
  let config;
  try {
    const runtime: RuntimeInfo = {
      cudaDeviceCount: probe.cudaDeviceCount,
      allocator: allocator.name,
    };
    config = loadConfig(env, runtime);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`configuration error: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
  const logger = createLogger({
    level: config.logLevel,
    format: chooseLogFormat(process.stdout.isTTY === true, config.nodeEnv),
  });
  process.on('unhandledRejection', (reason) => {
    logger.error('unhandled promise rejection', { reason: String(reason) });
  });

  const visualizations = new VisualizationStore({
    outputDir: config.outputDir,
    maxFiles: config.outputMaxFiles,
    maxAgeMs: config.outputMaxAgeSeconds * 1000,
    maxBytes: config.outputMaxBytes,
    maxFileBytes: config.outputMaxFileBytes,
    logger,
  });
  await visualizations.init(); // an unusable OUTPUT_DIR fails start-up, not the first request
  const addon = probe.addon;
  const models = new Models({
    config,
    logger,
    loadAddon: (): NativeAddon => {
      if (addon === null) throw probe.error;
      return addon;
    },
  });
  const engineState = new EngineState(models);
  const webSockets = new PropagationSockets({ config, engineState, logger });
  const metrics = config.enableMetrics ? new ServerMetrics(engineState) : undefined;
  const app = createApp({ config, engineState, logger, visualizations, webSockets, metrics });
  const server = createHttpServer(app, config, logger, metrics?.observeRefusal);
  const address = await listen(server, config.serverHost, config.serverPort);
  logger.info(`listening on http://${address.address}:${address.port}`, {
    host: address.address,
    port: address.port,
  });
  let metricsServer: Running['metricsServer'] = null;
  if (metrics !== undefined) {
    const listening = await startMetricsServer(metrics, config.metricsHost, config.metricsPort);
    metricsServer = listening.server;
    const { address: host, port } = listening.address;
    logger.info(`metrics on http://${host}:${port}/metrics`, { host, port });
  }
  const running: Running = { server, metricsServer, engineState, webSockets, visualizations };
  const deadlineMs = config.shutdownTimeoutSeconds * 1000;
  installShutdown(running, deadlineMs, logger);

  logger.info(
    `memory allocator: ${allocator.name}` +
      (allocator.name === 'system' ? ' (npm start preloads mimalloc where it is installed)' : ''),
    { allocator: allocator.name, library: allocator.library },
  );
  if (!config.imageModelEnabled) logger.info('image model disabled (IMAGE_MODEL_ENABLED=false)');
  if (!config.videoModelEnabled) logger.info('video sessions disabled (VIDEO_MODEL_ENABLED=false)');
  if (config.imageModelEnabled || config.videoModelEnabled) {
    await models.load(path.resolve(config.sam3Checkpoint));
  }
  const message = startupFailure(config, models);
  if (message !== null) {
    logger.error(message);
    console.error(`fatal: ${message}`);
    await shutDown(running, 0);
    process.exit(1);
  }
}

main().catch((error: unknown) => {
  console.error(`fatal: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
