/**
 * What the deployment tests share: running a command to its end, and the deployment files.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { repoPath } from '../helpers/repo';

export interface Finished {
  /** The exit code (null when a signal ended it). */
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `file` with `args` and resolves when it exits, whatever its exit code. */
export function run(
  file: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<Finished> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      {
        cwd: options.cwd,
        env: options.env,
        timeout: options.timeoutMs ?? 60_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        if (error !== null && typeof error.code !== 'number' && error.signal === null) {
          reject(error); // not started at all (ENOENT, EACCES)
          return;
        }
        resolve({ code: error === null ? 0 : (error.code as number | null), stdout, stderr });
      },
    );
  });
}

/** A file of the repository, as text. */
export function readRepoFile(...parts: string[]): string {
  return readFileSync(repoPath(...parts), 'utf8');
}

/** Parses KEY=value lines (blank lines and # comments skipped); throws on anything else. */
export function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [index, line] of text.split('\n').entries()) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    // Unquoted values only: systemd's EnvironmentFile= and compose's env_file read those alike.
    const match = /^([A-Z][A-Z0-9_]*)=([^\s"'#]*)$/.exec(line);
    if (match === null) throw new Error(`line ${index + 1} is not KEY=value: ${line}`);
    if (match[1] in env) throw new Error(`line ${index + 1} sets ${match[1]} again`);
    env[match[1]] = match[2];
  }
  return env;
}

/** The variable names that src/config.ts reads (each appears there as a quoted literal). */
export function configVariableNames(): Set<string> {
  const source = readRepoFile('src', 'config.ts');
  return new Set([...source.matchAll(/'([A-Z][A-Z0-9_]+)'/g)].map((match) => match[1]));
}
