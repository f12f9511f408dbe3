/**
 * Name and version of the server, from the repository's package.json (read once, at start-up).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface PackageInfo {
  name: string;
  version: string;
}

let cached: PackageInfo | undefined;

/** Walks up from this file (src/server or dist/src/server) to the package.json that owns it. */
export function readPackageInfo(): PackageInfo {
  if (cached !== undefined) return cached;
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<PackageInfo>;
      cached = {
        name: String(parsed.name ?? 'sam3-server'),
        version: String(parsed.version ?? '0.0.0'),
      };
      return cached;
    }
    if (path.dirname(dir) === dir) return { name: 'sam3-server', version: '0.0.0' };
  }
}
