/**
 * Entry point: configuration, logger, HTTP server first (so /health answers "loading"), then
 * the model in the background; SIGTERM/SIGINT drain in-flight requests and close the engine.
 */
import path from 'node:path';
import { ConfigError, loadConfig, readEnvironment, type RuntimeInfo } from './config';
import { VisualizationStore } from './engine/visualization';
import { chooseLogFormat, createLogger, type Logger } from './logging';
import { loadAddon } from './native/addon';
import type { NativeAddon } from './native/types';
import { createApp } from './server/app';
import { EngineState, loadImageModel } from './server/engine-state';
import { closeGracefully, createHttpServer, listen } from './server/http-server';

/** The addon, if it loads; its runtime info decides the device defaults of the config. */
function probeAddon(): { addon: NativeAddon | null; error: unknown; runtime: RuntimeInfo } {
  try {
    const addon = loadAddon();
    return {
      addon,
      error: null,
      runtime: { cudaDeviceCount: addon.runtimeInfo().cudaDeviceCount },
    };
  } catch (error) {
    return { addon: null, error, runtime: { cudaDeviceCount: 0 } };
  }
}

function installShutdown(
  server: ReturnType<typeof createHttpServer>,
  engineState: EngineState,
  deadlineMs: number,
  logger: Logger,
  onStopped: () => void,
): void {
  let stopping = false;
  const stop = async (signal: NodeJS.Signals): Promise<void> => {
    if (stopping) {
      logger.warn(`${signal} again: exiting now`);
      process.exit(1);
    }
    stopping = true;
    logger.info(`${signal}: no new requests; draining in-flight ones for up to ${deadlineMs} ms`);
    engineState.markStopping();
    await closeGracefully(server, deadlineMs);
    await engineState.close();
    onStopped();
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

async function main(): Promise<void> {
  const env = await readEnvironment(process.env, path.resolve('.env'));
  const probe = probeAddon();
  let config;
  try {
    config = loadConfig(env, probe.runtime);
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
    logger,
  });
  await visualizations.init(); // an unusable OUTPUT_DIR fails start-up, not the first request
  const engineState = new EngineState(config.imageModelDevice);
  const app = createApp({ config, engineState, logger, visualizations });
  const server = createHttpServer(app, config);
  const address = await listen(server, config.serverHost, config.serverPort);
  logger.info(`listening on http://${address.address}:${address.port}`, {
    host: address.address,
    port: address.port,
  });
  installShutdown(server, engineState, config.shutdownTimeoutSeconds * 1000, logger, () =>
    visualizations.close(),
  );

  if (!config.imageModelEnabled) {
    engineState.markDisabled();
    logger.info('image model disabled (IMAGE_MODEL_ENABLED=false)');
    return;
  }
  const addon = probe.addon;
  const addonLoader = (): NativeAddon => {
    if (addon === null) throw probe.error;
    return addon;
  };
  await loadImageModel(
    engineState,
    config,
    addonLoader,
    logger,
    path.resolve(config.sam3Checkpoint),
  );
}

main().catch((error: unknown) => {
  console.error(`fatal: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
