/**
 * POST /api/v1/image/segment: text-prompted segmentation of one image (SPEC.md).
 */
import { Router } from 'express';
import type { Config } from '../../config';
import { decodeImage } from '../../engine/image-decoder';
import type { VisualizationStore } from '../../engine/visualization';
import type { EngineState } from '../engine-state';
import { ApiError } from '../errors';
import type { PromptBody, SegmentRequestBody, TextPromptBody } from '../schemas';

export interface ImageRouteOptions {
  config: Readonly<Config>;
  engineState: EngineState;
  validateSegmentRequest: (body: unknown) => SegmentRequestBody;
  visualizations: Pick<VisualizationStore, 'render'>;
}

function isTextPrompt(prompt: PromptBody): prompt is TextPromptBody {
  return prompt.type === 'text';
}

export function imageRoutes(options: ImageRouteOptions): Router {
  const { config, engineState, validateSegmentRequest, visualizations } = options;
  const router = Router();

  router.post('/api/v1/image/segment', async (req, res) => {
    if (!req.is('application/json')) {
      throw new ApiError('unsupported_media', 'Content-Type must be application/json');
    }
    const body = validateSegmentRequest(req.body);
    const unsupported = body.prompts.findIndex((prompt) => !isTextPrompt(prompt));
    if (unsupported >= 0) {
      throw new ApiError(
        'unsupported_prompt',
        `/prompts/${unsupported}: ${body.prompts[unsupported].type} prompts are not supported ` +
          'yet; use text prompts',
      );
    }
    const segmenter = engineState.requireSegmenter();
    const image = await decodeImage(body.image, { maxPixels: config.maxImagePixels });
    const result = await segmenter.segment({
      image,
      prompts: body.prompts.filter(isTextPrompt),
      confidenceThreshold: body.confidence_threshold ?? config.imageModelConfidenceThreshold,
    });
    const visualization =
      body.return_visualization === true ? await visualizations.render(image, result) : null;
    res.json({
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

  return router;
}
