/**
 * The Express application (no listening here: main.ts and the tests own the HTTP server).
 *
 * Order matters: the request id comes first so that every response, body-parser errors and
 * 404s included, carries X-Request-Id; CORS comes before the rate limit and the API key check
 * so that their 429/401 answers still carry CORS headers for allowed origins (and preflights
 * are answered without a key); both come before the body parser, so refused requests cost no
 * body parsing; one error handler at the end speaks for all routes.
 */
import express, { type Express } from 'express';
import helmet from 'helmet';
import type { Config } from '../config';
import type { VisualizationStore } from '../engine/visualization';
import type { Logger } from '../logging';
import { apiKeyAuth, createApiKeyVerifier } from './auth';
import { declaredBodyLimit } from './body-limits';
import { corsPolicy } from './cors';
import type { EngineState } from './engine-state';
import { errorHandler, notFound } from './error-handler';
import { ApiError } from './errors';
import { buildOpenApiDocument, type OpenApiDocument } from './openapi';
import { readPackageInfo } from './package-info';
import { requestRateLimit } from './rate-limit';
import { accessLog, requestContext } from './request-context';
import { demoRoutes } from './routes/demo';
import { docsRoutes } from './routes/docs';
import { IMAGE_MODEL_PATHS, imageAdmissionGate, imageRoutes } from './routes/image';
import { infoRoutes } from './routes/info';
import { videoRoutes } from './routes/video';
import { visualizationRoutes } from './routes/visualizations';
import {
  cachedFeaturesRequestSchema,
  gpuIdsFieldSchema,
  propagateRequestSchema,
  segmentRequestSchema,
  startSessionFieldsSchema,
  startSessionRequestSchema,
  videoPromptRequestSchema,
  type CachedFeaturesRequestBody,
  type GpuId,
  type PropagateRequestBody,
  type SegmentRequestBody,
  type StartSessionFormFields,
  type StartSessionRequestBody,
  type VideoPromptRequestBody,
  type JsonSchema,
} from './schemas';
import { compileValidator, createAjv } from './validation';
import type { ServerMetrics } from './metrics';
import type { PropagationSockets } from './ws';

export interface AppDependencies {
  config: Readonly<Config>;
  engineState: EngineState;
  logger: Logger;
  /** return_visualization PNGs (init() already awaited). */
  visualizations: VisualizationStore;
  /** The WebSocket propagation endpoint; without it /ws/propagate/{id} is a 404. */
  webSockets?: PropagationSockets;
  /** Prometheus metrics (ENABLE_METRICS): every request is counted and timed. */
  metrics?: ServerMetrics;
}

const BYTES_PER_MB = 1024 * 1024;
/** Paths that still answer while the server shuts down (so orchestrators see "degraded"). */
const SERVED_WHILE_STOPPING = new Set(['/health']);

/** The request schemas as this configuration's limits make them. */
export interface RequestSchemas {
  segment: JsonSchema;
  cachedFeatures: JsonSchema;
  startSession: JsonSchema;
  /** The HTTP propagate body (with `stream`). */
  propagate: JsonSchema;
}

export function configuredRequestSchemas(config: Readonly<Config>): RequestSchemas {
  const maxJsonBodyBytes = Math.floor(config.maxJsonBodyMb * BYTES_PER_MB);
  return {
    segment: segmentRequestSchema(maxJsonBodyBytes, config.imageModelConfidenceThreshold),
    cachedFeatures: cachedFeaturesRequestSchema(
      maxJsonBodyBytes,
      config.imageModelConfidenceThreshold,
    ),
    startSession: startSessionRequestSchema(maxJsonBodyBytes),
    propagate: propagateRequestSchema({ stream: true }),
  };
}

/**
 * The document GET /openapi.json serves for this configuration: built from the schemas that
 * validate the requests (the TypeScript client's types are generated from it).
 */
export function configuredOpenApiDocument(
  config: Readonly<Config>,
  version: string,
  schemas: RequestSchemas = configuredRequestSchemas(config),
): OpenApiDocument {
  return buildOpenApiDocument({
    version,
    segmentRequestSchema: schemas.segment,
    cachedFeaturesRequestSchema: schemas.cachedFeatures,
    startSessionRequestSchema: schemas.startSession,
    propagateRequestSchema: schemas.propagate,
    limits: {
      maxUploadSizeMb: config.maxUploadSizeMb,
      wsMaxBufferedMb: config.wsMaxBufferedMb,
      maxConcurrentSessions: config.maxConcurrentSessions,
      maxObjects: config.videoMaxObjects,
      sessionTimeoutSeconds: config.sessionTimeoutSeconds,
    },
  });
}

export function createApp(deps: AppDependencies): Express {
  const { config, engineState, logger } = deps;
  const packageInfo = readPackageInfo();
  const maxJsonBodyBytes = Math.floor(config.maxJsonBodyMb * BYTES_PER_MB);

  const schemas = configuredRequestSchemas(config);
  const ajv = createAjv();
  const validateSegmentRequest = compileValidator<SegmentRequestBody>(ajv, schemas.segment);
  const validateCachedFeaturesRequest = compileValidator<CachedFeaturesRequestBody>(
    ajv,
    schemas.cachedFeatures,
  );
  const openApi = configuredOpenApiDocument(config, packageInfo.version, schemas);

  const app = express();
  // A hop count, never `true`: X-Forwarded-For is believed only from that many proxies.
  app.set('trust proxy', config.trustProxyHops);
  // Responses are computed per request; hashing megabytes of RLE for an ETag is wasted work.
  app.set('etag', false);
  app.disable('x-powered-by');

  app.use(requestContext(logger));
  app.use(accessLog());
  if (deps.metrics !== undefined) app.use(deps.metrics.middleware());
  app.use(helmet());
  app.use(corsPolicy(config.corsOriginsList));
  app.use((req, res, next) => {
    if (engineState.status === 'stopping') {
      res.set('Connection', 'close');
      if (!SERVED_WHILE_STOPPING.has(req.path)) {
        throw new ApiError('not_ready', 'the server is shutting down');
      }
    }
    next();
  });
  const verifyApiKey = createApiKeyVerifier(config.apiKeys);
  if (config.rateLimitEnabled) {
    app.use(
      requestRateLimit({
        limit: config.rateLimitRequestsPerMinute,
        windowSeconds: config.rateLimitWindowSeconds,
        verifyApiKey,
        logger,
      }),
    );
  }
  app.use(apiKeyAuth({ requireApiKey: config.requireApiKey, verify: verifyApiKey }));
  // A declared Content-Length over the limit is a 413 before the body is read (and before an
  // `Expect: 100-continue` client is told to send it).
  app.use(
    declaredBodyLimit({
      maxJsonBodyMb: config.maxJsonBodyMb,
      maxUploadSizeMb: config.maxUploadSizeMb,
    }),
  );
  // A saturated image model refuses before the body is read.
  app.use(IMAGE_MODEL_PATHS, imageAdmissionGate(engineState));
  // Inflated size counts against the limit (a gzip bomb is a 413, not an allocation).
  app.use(express.json({ limit: maxJsonBodyBytes, strict: true, type: 'application/json' }));

  app.use(
    infoRoutes({
      engineState,
      packageInfo,
      openApi,
    }),
  );
  app.use(docsRoutes());
  app.use(demoRoutes());
  app.use(
    imageRoutes({
      config,
      engineState,
      validateSegmentRequest,
      validateCachedFeaturesRequest,
      visualizations: deps.visualizations,
    }),
  );
  app.use(visualizationRoutes({ store: deps.visualizations }));
  app.use(
    videoRoutes({
      config,
      engineState,
      validateStart: compileValidator<StartSessionRequestBody>(ajv, schemas.startSession),
      validateStartFields: compileValidator<StartSessionFormFields>(ajv, startSessionFieldsSchema),
      validateGpuIds: compileValidator<{ gpu_ids: GpuId[] }>(ajv, gpuIdsFieldSchema),
      validatePrompt: compileValidator<VideoPromptRequestBody>(ajv, videoPromptRequestSchema),
      validatePropagate: compileValidator<PropagateRequestBody>(ajv, schemas.propagate),
    }),
  );
  if (deps.webSockets !== undefined) app.use(deps.webSockets.routes());

  app.use(notFound);
  app.use(errorHandler(logger));
  return app;
}
