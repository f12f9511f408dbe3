/**
 * POST /api/v1/image/segment (text, box and point prompts; SPEC.md) and
 * POST /api/v1/image/cached-features (one image, many text prompts).
 *
 * Both answer with a Server-Timing header: the wall time of each stage of this request
 * (decode, hash, image_features, text_features, detect, points, visualization), milliseconds.
 */
import { Router, type Request, type RequestHandler, type Response } from 'express';
import { performance } from 'node:perf_hooks';
import type { Config } from '../../config';
import { throwIfCancelled } from '../../engine/admission';
import { decodeImage, type DecodedImage } from '../../engine/image-decoder';
import { planQueries } from '../../engine/prompt-plan';
import { elapsedMs, type Timings } from '../../engine/segmenter';
import type { VisualizationStore } from '../../engine/visualization';
import type { EngineState } from '../engine-state';
import { ApiError } from '../errors';
import type { CachedFeaturesRequestBody, SegmentRequestBody } from '../schemas';

/** Set when return_visualization was asked for but no file was stored: the reason. */
export const VISUALIZATION_SKIPPED_HEADER = 'X-Visualization-Skipped';

export interface ImageRouteOptions {
  config: Readonly<Config>;
  engineState: EngineState;
  validateSegmentRequest: (body: unknown) => SegmentRequestBody;
  validateCachedFeaturesRequest: (body: unknown) => CachedFeaturesRequestBody;
  visualizations: Pick<VisualizationStore, 'render'>;
}

function serverTiming(timings: Timings): string {
  return Object.entries(timings)
    .map(([stage, ms]) => `${stage};dur=${ms}`)
    .join(', ');
}

function requireJson(req: Request): void {
  if (!req.is('application/json')) {
    throw new ApiError('unsupported_media', 'Content-Type must be application/json');
  }
}

async function decodeTimed(
  input: string,
  config: Readonly<Config>,
  timings: Timings,
): Promise<DecodedImage> {
  const started = performance.now();
  const image = await decodeImage(input, { maxPixels: config.maxImagePixels });
  timings.decode = elapsedMs(started);
  return image;
}

function sendTimed(res: Response, timings: Timings, body: unknown): void {
  res.set('Server-Timing', serverTiming(timings));
  res.json(body);
}

/** The image model routes, for what must run before their bodies are read. */
export const IMAGE_MODEL_PATHS = ['/api/v1/image/segment', '/api/v1/image/cached-features'];

/**
 * Refuses an image model request with 429 `overloaded` before its body is read when the model
 * could neither run nor queue it: a saturated server does not take in bodies it will refuse.
 */
export function imageAdmissionGate(engineState: EngineState): RequestHandler {
  return (req, res, next) => {
    if (req.method === 'POST') {
      res.locals.route = req.baseUrl; // the mount path: one of IMAGE_MODEL_PATHS
      engineState.refuseImageRequestIfFull();
    }
    next();
  };
}

export function imageRoutes(options: ImageRouteOptions): Router {
  const { config, engineState, visualizations } = options;
  const router = Router();

  router.post('/api/v1/image/segment', async (req, res) => {
    requireJson(req);
    const body = options.validateSegmentRequest(req.body);
    // Refused before anything is decoded (a plan the model cannot run costs nothing).
    const queries = planQueries(body.prompts);
    const segmenter = engineState.requireSegmenter();
    const { signal } = res.locals;
    const timings: Timings = {};
    let visualizationUrl: string | null = null;
    const result = await engineState.admitImageRequest(signal, async () => {
      const image = await decodeTimed(body.image, config, timings);
      throwIfCancelled(signal, 'after decoding');
      const segmented = await segmenter.segment({
        image,
        signal,
        queries,
        confidenceThreshold: body.confidence_threshold ?? config.imageModelConfidenceThreshold,
      });
      Object.assign(timings, segmented.timings);
      if (body.return_visualization === true) {
        throwIfCancelled(signal, 'before the visualization');
        const started = performance.now();
        const visualization = await visualizations.render(image, segmented);
        timings.visualization = elapsedMs(started);
        // Not stored (over OUTPUT_MAX_FILE_BYTES): the URL stays null and this header says why.
        if (visualization.stored) visualizationUrl = visualization.urlPath;
        else res.set(VISUALIZATION_SKIPPED_HEADER, visualization.reason);
      }
      return segmented;
    });
    sendTimed(res, timings, {
      masks: result.masks,
      boxes: result.boxes,
      scores: result.scores,
      labels: result.labels,
      num_masks: result.num_masks,
      image_size: result.image_size,
      visualization_url: visualizationUrl,
      inference_time_ms: result.inference_time_ms,
    });
  });

  router.post('/api/v1/image/cached-features', async (req, res) => {
    requireJson(req);
    const body = options.validateCachedFeaturesRequest(req.body);
    const segmenter = engineState.requireSegmenter();
    const { signal } = res.locals;
    const timings: Timings = {};
    const result = await engineState.admitImageRequest(signal, async () => {
      const image = await decodeTimed(body.image, config, timings);
      throwIfCancelled(signal, 'after decoding');
      return segmenter.segmentTexts({
        image,
        signal,
        texts: body.text_prompts,
        confidenceThreshold: body.confidence_threshold ?? config.imageModelConfidenceThreshold,
      });
    });
    Object.assign(timings, result.timings);
    sendTimed(res, timings, {
      results: result.results,
      cache_hit: result.cacheHit,
      inference_time_ms: result.inference_time_ms,
    });
  });

  return router;
}
