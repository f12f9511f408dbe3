/**
 * GET /docs: Swagger UI (swagger-ui-dist, served from this server: no CDN, works offline)
 * over GET /openapi.json, whose request examples are the README's. Its assets are open routes
 * like the page (auth.ts) and run under helmet's default Content-Security-Policy: scripts from
 * 'self' only, so the start-up script is served as a file too.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Router } from 'express';

const SWAGGER_UI_DIR = path.dirname(require.resolve('swagger-ui-dist/package.json'));

/** Starts Swagger UI over this server's document; served as a file (script-src 'self'). */
const INIT_SCRIPT = `window.addEventListener('load', function () {
  window.SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#docs',
    deepLinking: true,
    validatorUrl: null, // no validator service is called
  });
});
`;

/** The files of swagger-ui-dist served under /docs. */
const DOCS_FILES: Readonly<Record<string, string>> = {
  '/docs/swagger-ui.css': 'swagger-ui.css',
  '/docs/swagger-ui-bundle.js': 'swagger-ui-bundle.js',
};

/** Every asset path of the page (open routes, auth.ts). */
export const DOCS_ASSET_PATHS = [...Object.keys(DOCS_FILES), '/docs/init.js'];

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SAM3 server API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="docs"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`;

const TYPES: Readonly<Record<string, string>> = {
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
};

export function docsRoutes(): Router {
  const router = Router();
  // Read once at start-up: a missing asset is a broken install, found before the first visit.
  const assets: [string, Buffer, string][] = [
    ...Object.entries(DOCS_FILES).map(
      ([route, file]) =>
        [route, readFileSync(path.join(SWAGGER_UI_DIR, file)), TYPES[path.extname(file)]] as [
          string,
          Buffer,
          string,
        ],
    ),
    ['/docs/init.js', Buffer.from(INIT_SCRIPT), TYPES['.js']],
  ];
  router.get('/docs', (_req, res) => {
    res.type('text/html; charset=utf-8').send(PAGE);
  });
  for (const [route, bytes, type] of assets) {
    router.get(route, (_req, res) => {
      res.set('Cache-Control', 'public, max-age=3600').type(type).send(bytes);
    });
  }
  return router;
}
