/**
 * Paths inside the repository, found from this file whether it runs from test/ or dist/test/.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const PACKAGE_NAME = 'sam3-server';

let cachedRoot: string | undefined;

/** The directory holding the project's package.json. */
export function repoRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  for (let dir = __dirname; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    const manifest = path.join(dir, 'package.json');
    if (existsSync(manifest)) {
      const { name } = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string };
      if (name === PACKAGE_NAME) {
        cachedRoot = dir;
        return dir;
      }
    }
  }
  throw new Error(`no package.json named ${PACKAGE_NAME} above ${__dirname}`);
}

/** An absolute path from parts relative to the repository root. */
export function repoPath(...parts: string[]): string {
  return path.join(repoRoot(), ...parts);
}

/** The project's Python (the virtual environment with torch and transformers). */
export function venvPython(): string {
  return repoPath('.venv', 'bin', 'python');
}
