/**
 * POST /api/v1/image/segment (text, box and point prompts; SPEC.md) and
 * POST /api/v1/image/cached-features (one image, many text prompts).
 *
 * Both answer with a Server-Timing header: the wall time of each stage of this request
 * (decode, hash, image_features, text_features, detect, points, visualization), milliseconds.
 */
import { Router, type Request, type Response } from 'express';
import { performance } from 'node:perf_hooks';
import type { Config } from '../../config';
import { decodeImage, type DecodedImage } from '../../engine/image-decoder';
import { elapsedMs, type Timings } from '../../engine/segmenter';
import type { VisualizationStore } from '../../engine/visualization';
import type { EngineState } from '../engine-state';
import { ApiError } from '../errors';
import type { CachedFeaturesRequestBody, SegmentRequestBody } from '../schemas';

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

export function imageRoutes(options: ImageRouteOptions): Router {
  const { config, engineState, visualizations } = options;
  const router = Router();

  router.post('/api/v1/image/segment', async (req, res) => {
    requireJson(req);
    const body = options.validateSegmentRequest(req.body);
    const segmenter = engineState.requireSegmenter();
    const timings: Timings = {};
    const image = await decodeTimed(body.image, config, timings);
    const result = await segmenter.segment({
      image,
      prompts: body.prompts,
      confidenceThreshold: body.confidence_threshold ?? config.imageModelConfidenceThreshold,
    });
    Object.assign(timings, result.timings);
    let visualization = null;
    if (body.return_visualization === true) {
      const started = performance.now();
      visualization = await visualizations.render(image, result);
      timings.visualization = elapsedMs(started);
    }
    sendTimed(res, timings, {
      masks: result.masks,
      boxes: result.boxes,
      scores: result.scores,
      labels: result.labels,
      num_masks: result.num_masks,
      image_size: result.image_size,
      visualization_url: visualization?.urlPath ?? null,
      inference_time_ms: result.inference_time_ms,
    });
  });

  router.post('/api/v1/image/cached-features', async (req, res) => {
    requireJson(req);
    const body = options.validateCachedFeaturesRequest(req.body);
    const segmenter = engineState.requireSegmenter();
    const timings: Timings = {};
    const image = await decodeTimed(body.image, config, timings);
    const result = await segmenter.segmentTexts({
      image,
      texts: body.text_prompts,
      confidenceThreshold: body.confidence_threshold ?? config.imageModelConfidenceThreshold,
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
