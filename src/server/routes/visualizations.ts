/**
 * GET /api/v1/visualizations/:name: the PNG overlays written for `return_visualization`.
 *
 * The name is the whole capability (128 random bits), so it is checked against the store's
 * exact pattern before any path is built; anything else, and an expired or missing file, is
 * the same 404.
 */
import { Router } from 'express';
import { pipeline } from 'node:stream/promises';
import {
  VISUALIZATION_FILE_NAME,
  VISUALIZATION_URL_PREFIX,
  type VisualizationStore,
} from '../../engine/visualization';
import { ApiError } from '../errors';

export interface VisualizationRouteOptions {
  store: Pick<VisualizationStore, 'open'>;
}

const FILE_HEADERS = {
  'Content-Type': 'image/png',
  'Cache-Control': 'private, max-age=3600',
  'X-Content-Type-Options': 'nosniff',
} as const;

export function visualizationRoutes(options: VisualizationRouteOptions): Router {
  const { store } = options;
  const router = Router();

  // Matched on the raw path rather than as a `:name` parameter: Express decodes parameters and
  // answers a malformed escape (`%zz`) with an error of its own; a valid name needs no escapes.
  router.use(VISUALIZATION_URL_PREFIX.slice(0, -1), async (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      next();
      return;
    }
    const name = req.path.slice(1);
    const opened = VISUALIZATION_FILE_NAME.test(name) ? await store.open(name) : null;
    if (opened === null) {
      throw new ApiError('not_found', 'no such visualization (it may have expired)');
    }
    res.status(200).set(FILE_HEADERS).set('Content-Length', String(opened.size));
    if (req.method === 'HEAD') {
      await opened.handle.close();
      res.end();
      return;
    }
    try {
      // The stream owns the handle from here and closes it when done or destroyed.
      await pipeline(opened.handle.createReadStream(), res);
    } catch (error) {
      if (!res.headersSent) {
        for (const header of [...Object.keys(FILE_HEADERS), 'Content-Length']) {
          res.removeHeader(header);
        }
        throw error;
      }
      // Client went away or the read failed mid-body: nothing more can be said on this socket.
      res.destroy();
    }
  });

  return router;
}
