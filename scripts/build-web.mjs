// Builds the demo page (/demo) into dist/web/demo: type-checks web/ (DOM types), bundles
// web/demo/src/main.ts with the TypeScript client for the browser (esbuild, one script, no
// CDN) and copies the page and its stylesheet beside it.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const source = path.join(root, 'web', 'demo');
const out = path.join(root, 'dist', 'web', 'demo');

execFileSync(
  process.execPath,
  [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'web'],
  {
    cwd: root,
    stdio: 'inherit',
  },
);
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [path.join(source, 'src', 'main.ts')],
  outfile: path.join(out, 'demo.js'),
  bundle: true,
  format: 'iife',
  target: ['chrome109', 'firefox115', 'safari16'],
  sourcemap: true,
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
});
for (const file of ['index.html', 'demo.css']) {
  copyFileSync(path.join(source, file), path.join(out, file));
}
