/**
 * Which malloc the process runs on. The C++ core's many short-lived tensor buffers are much
 * cheaper under mimalloc than under glibc's malloc (README "Memory allocator"); an allocator
 * can only be chosen before the process starts (LD_PRELOAD, as scripts/with-allocator.sh does
 * for npm start), so the server can only check what it got.
 */
import { readFileSync } from 'node:fs';

export type AllocatorName = 'mimalloc' | 'jemalloc' | 'system';

export interface ActiveAllocator {
  name: AllocatorName;
  /** The shared library mapped into the process; null for the system allocator. */
  library: string | null;
}

const LIBRARIES: readonly [AllocatorName, RegExp][] = [
  ['mimalloc', /\/libmimalloc[^/]*\.so[^/]*$/],
  ['jemalloc', /\/libjemalloc[^/]*\.so[^/]*$/],
];

/** The allocator library in a /proc/<pid>/maps text, or the system allocator. */
export function allocatorInMaps(maps: string): ActiveAllocator {
  for (const line of maps.split('\n')) {
    const start = line.indexOf('/');
    if (start < 0) continue;
    const file = line.slice(start);
    for (const [name, pattern] of LIBRARIES) {
      if (pattern.test(file)) return { name, library: file };
    }
  }
  return { name: 'system', library: null };
}

/** This process's allocator (Linux: from /proc/self/maps; elsewhere the system one). */
export function activeAllocator(): ActiveAllocator {
  try {
    return allocatorInMaps(readFileSync('/proc/self/maps', 'utf8'));
  } catch {
    return { name: 'system', library: null };
  }
}
