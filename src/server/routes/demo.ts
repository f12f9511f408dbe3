/**
 * GET /demo: the demo page (web/demo, built into dist/web/demo by `npm run build:web`): open an
 * image or a video and segment or track it with this server's API. Static files, read once at
 * start-up; open routes like /docs (the page asks for the API key itself, auth.ts). The page
 * runs under a Content-Security-Policy of its own: everything from this server only, with
 * `blob:` for the frames and images the browser decodes from the user's files.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Router } from 'express';

/** dist/web/demo, from dist/src/server/routes. */
const DEMO_DIR = path.resolve(__dirname, '..', '..', '..', 'web', 'demo');

const DEMO_FILES: Readonly<Record<string, { file: string; type: string }>> = {
  '/demo': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/demo/demo.js': { file: 'demo.js', type: 'text/javascript; charset=utf-8' },
  '/demo/demo.js.map': { file: 'demo.js.map', type: 'application/json; charset=utf-8' },
  '/demo/demo.css': { file: 'demo.css', type: 'text/css; charset=utf-8' },
};

/** Every path of the page and its assets (open routes, auth.ts). */
export const DEMO_PATHS = Object.keys(DEMO_FILES);

export const DEMO_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob: data:",
  "media-src 'self' blob:",
  // 'self' covers the same host's ws: and wss: (CSP Level 3).
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function demoRoutes(): Router {
  const router = Router();
  // Read once: a missing file is a broken build (`npm run build:web`), found at start-up.
  for (const [route, { file, type }] of Object.entries(DEMO_FILES)) {
    const bytes = readFileSync(path.join(DEMO_DIR, file));
    router.get(route, (_req, res) => {
      res
        .set('Content-Security-Policy', DEMO_CONTENT_SECURITY_POLICY)
        // Revalidated on every visit: an upgraded server never runs an older page.
        .set('Cache-Control', 'no-cache')
        .type(type)
        .send(bytes);
    });
  }
  return router;
}
