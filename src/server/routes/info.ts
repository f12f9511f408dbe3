/**
 * GET / (server info), GET /health (readiness) and GET /openapi.json (GET /docs: docs.ts).
 */
import { Router } from 'express';
import type { EngineState } from '../engine-state';
import { RANDOM_WEIGHTS_WARNING } from '../engine-state';
import { RETRY_AFTER_SECONDS } from '../errors';
import type { OpenApiDocument } from '../openapi';
import type { PackageInfo } from '../package-info';

export interface InfoRouteOptions {
  engineState: EngineState;
  packageInfo: PackageInfo;
  openApi: OpenApiDocument;
}

export function infoRoutes(options: InfoRouteOptions): Router {
  const { engineState, packageInfo, openApi } = options;
  const router = Router();
  const openApiJson = JSON.stringify(openApi);

  const randomWeightsFields = (): { random_weights: boolean; warning?: string } => {
    const random = engineState.model?.random_weights ?? false;
    return random
      ? { random_weights: true, warning: RANDOM_WEIGHTS_WARNING }
      : { random_weights: false };
  };

  router.get('/', (_req, res) => {
    const { random_weights, warning } = randomWeightsFields();
    res.json({
      name: packageInfo.name,
      version: packageInfo.version,
      status: engineState.health(),
      model: engineState.model,
      random_weights,
      ...(warning === undefined ? {} : { warning }),
      docs: '/docs',
      openapi: '/openapi.json',
    });
  });

  router.get('/health', (_req, res) => {
    const status = engineState.health();
    if (status !== 'ok') res.set('Retry-After', String(RETRY_AFTER_SECONDS));
    const { random_weights, warning } = randomWeightsFields();
    res.status(status === 'ok' ? 200 : 503).json({
      status,
      model: engineState.model,
      devices: engineState.devices(),
      sessions: engineState.sessionCount(),
      random_weights,
      ...(warning === undefined ? {} : { warning }),
    });
  });

  router.get('/openapi.json', (_req, res) => {
    res.type('application/json').send(openApiJson);
  });

  return router;
}
