/**
 * The Dockerfile: no Docker daemon or base image can be had here, so the image is not built.
 * What is checked instead: dockerfile-utils (the validator behind VS Code's Dockerfile support)
 * reports nothing; the structure the deployment needs (stages, a non-root user, HEALTHCHECK,
 * the bundle volume, a valid configuration in its ENV); .dockerignore sends only what the
 * Dockerfile copies; and the HEALTHCHECK command itself, run against real servers.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import ignore from '@balena/dockerignore';
import { DockerfileParser, type Instruction, type JSONInstruction } from 'dockerfile-ast';
import { validate, ValidationSeverity, type ValidatorSettings } from 'dockerfile-utils';
import { loadConfig } from '../../src/config';
import { repoPath } from '../helpers/repo';
import { exportTinyBundle, startTestServer, type TestServer } from '../helpers/server';
import { readRepoFile, run } from './tools';

const DOCKERFILE = readRepoFile('Dockerfile');
const dockerfile = DockerfileParser.parse(DOCKERFILE);
const packageJson = JSON.parse(readRepoFile('package.json')) as {
  main: string;
  scripts: Record<string, string>;
};

/** Every rule of dockerfile-utils that is configurable, at its strictest. */
const STRICT: ValidatorSettings = {
  deprecatedMaintainer: ValidationSeverity.ERROR,
  directiveCasing: ValidationSeverity.ERROR,
  emptyContinuationLine: ValidationSeverity.ERROR,
  instructionCasing: ValidationSeverity.ERROR,
  instructionCmdMultiple: ValidationSeverity.ERROR,
  instructionEntrypointMultiple: ValidationSeverity.ERROR,
  instructionHealthcheckMultiple: ValidationSeverity.ERROR,
  instructionJSONInSingleQuotes: ValidationSeverity.ERROR,
  instructionWorkdirRelative: ValidationSeverity.ERROR,
};

function lint(content: string): string[] {
  return validate(content, STRICT).map(
    (diagnostic) => `line ${diagnostic.range.start.line + 1}: ${diagnostic.message}`,
  );
}

interface Stage {
  name: string | null;
  image: string | null;
  instructions: Instruction[];
}

/** The build stages in order, each with its instructions after its FROM. */
function stages(): Stage[] {
  const result: Stage[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === 'FROM') {
      const from = dockerfile.getFROMs().find((candidate) => candidate === instruction);
      assert.ok(from !== undefined);
      result.push({ name: from.getBuildStage(), image: from.getImage(), instructions: [] });
    } else if (result.length > 0) {
      result[result.length - 1].instructions.push(instruction);
    }
  }
  return result;
}

function only(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((instruction) => instruction.getKeyword() === keyword);
}

function jsonStrings(instruction: Instruction): string[] {
  return (instruction as JSONInstruction).getJSONStrings().map((value) => value.getJSONValue());
}

/** The ENV of a stage as a map. */
function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const instruction of dockerfile.getENVs()) {
    if (!stage.instructions.includes(instruction)) continue;
    for (const property of instruction.getProperties()) {
      env[property.getName()] = property.getValue() ?? '';
    }
  }
  return env;
}

const runtime = stages()[stages().length - 1];
const runText = only(runtime, 'RUN')
  .map((instruction) => instruction.getArgumentsContent() ?? '')
  .join('\n');

/** The HEALTHCHECK's CMD, exec form. */
function healthcheckCommand(): string[] {
  const [healthcheck] = dockerfile.getHEALTHCHECKs();
  const content = healthcheck.getArgumentsContent() ?? '';
  assert.match(content, /^CMD \[/, 'HEALTHCHECK CMD in exec form');
  return JSON.parse(content.slice('CMD '.length)) as string[];
}

describe('Dockerfile lint', () => {
  it('passes dockerfile-utils with no error and no warning', () => {
    assert.deepEqual(lint(DOCKERFILE), []);
  });

  it('is what the linter reads: a broken copy of it is reported line by line', () => {
    const lines = DOCKERFILE.split('\n');
    const healthLine = lines.findIndex((line) => line.startsWith('HEALTHCHECK '));
    const userLine = lines.findIndex((line) => line.startsWith('USER '));
    lines[healthLine] = lines[healthLine].replace('--interval=30s', '--interval=30x');
    lines[userLine] = 'USER';
    assert.deepEqual(lint(lines.join('\n')), [
      `line ${userLine + 1}: Instruction has no arguments`,
      `line ${healthLine + 1}: time: unknown unit x in duration 30x`,
    ]);
  });
});

describe('Dockerfile structure', () => {
  it('is multi-stage: the addon is built in one stage and run from a CUDA runtime image', () => {
    const all = stages();
    assert.ok(all.length >= 2, `${all.length} FROM`);
    assert.equal(runtime.name, 'runtime');
    assert.match(runtime.image ?? '', /^nvidia\/cuda:\$\{CUDA_VERSION\}-base-ubuntu22\.04$/);
    const build = all.find((stage) => stage.name === 'build');
    assert.ok(build !== undefined, 'a stage named build');
    const buildRuns = only(build, 'RUN')
      .map((instruction) => instruction.getArgumentsContent() ?? '')
      .join('\n');
    for (const command of [
      'npm ci',
      'LIBTORCH_DIR=/opt/torch/torch npm run build:native',
      'npm run build:ts',
      'npm run build:web',
      'npm prune --omit=dev',
    ]) {
      assert.ok(buildRuns.includes(command), `build stage runs ${command}`);
    }
    for (const script of ['build:native', 'build:ts', 'build:web']) {
      assert.ok(packageJson.scripts[script], `package.json has the script ${script}`);
    }
    const copied = dockerfile
      .getCOPYs()
      .filter((copy) => runtime.instructions.includes(copy))
      .map((copy) => `${copy.getFromFlag()?.getValue() ?? ''} ${copy.getArgumentsContent()}`);
    assert.deepEqual(copied, [
      'node /usr/local/bin/node /usr/local/bin/node',
      'build /opt/torch/torch/lib /opt/torch/torch/lib',
      'build /opt/torch/nvidia /opt/torch/nvidia',
      'build /src/package.json ./',
      'build /src/node_modules ./node_modules',
      'build /src/dist/src ./dist/src',
      'build /src/dist/web ./dist/web',
      'build /src/build/Release/sam3.node ./build/Release/sam3.node',
      ' scripts/start.sh scripts/with-allocator.sh ./scripts/',
    ]);
    // The command is npm start's: the launcher execs node on the package's entry point (where
    // src/native/addon.ts finds the addon), on mimalloc, which the runtime installs.
    assert.deepEqual(jsonStrings(only(runtime, 'CMD')[0]), ['bash', 'scripts/start.sh']);
    assert.equal(packageJson.scripts.start, 'bash scripts/start.sh');
    assert.match(
      readRepoFile('scripts', 'start.sh'),
      new RegExp(`exec bash scripts/with-allocator.sh node ${packageJson.main} "\\$@"`),
    );
    assert.equal(packageJson.main, 'dist/src/main.js');
    assert.ok(runText.includes('ffmpeg'), 'the runtime installs ffmpeg');
    assert.ok(runText.includes('libmimalloc2.0'), 'the runtime installs mimalloc');
  });

  it('runs as a dedicated user that is not root', () => {
    const users = only(runtime, 'USER');
    assert.equal(users.length, 1);
    // Numeric, so that a runtime can check it is not root without reading /etc/passwd.
    assert.equal(users[0].getArgumentsContent(), '10001:10001');
    assert.match(runText, /groupadd --system --gid 10001 sam3/);
    assert.match(runText, /useradd --system --uid 10001 --gid sam3 /);
  });

  it('declares the bundle a VOLUME that SAM3_CHECKPOINT points into', () => {
    const volumes = only(runtime, 'VOLUME').flatMap(jsonStrings);
    assert.deepEqual(volumes, ['/models']);
    assert.equal(envOf(runtime).SAM3_CHECKPOINT, '/models/sam3');
  });

  it('checks GET /health with node itself', () => {
    assert.equal(dockerfile.getHEALTHCHECKs().length, 1);
    assert.ok(runtime.instructions.includes(dockerfile.getHEALTHCHECKs()[0]));
    const command = healthcheckCommand();
    assert.equal(command[0], 'node');
    assert.equal(command[1], '-e');
    assert.match(command[2], /'\/health'/);
  });

  it('exposes SERVER_PORT, and its ENV is a configuration the server accepts', () => {
    const env = envOf(runtime);
    assert.deepEqual(
      only(runtime, 'EXPOSE').map((expose) => expose.getArgumentsContent()),
      [env.SERVER_PORT],
    );
    const config = loadConfig(env, { cudaDeviceCount: 1 });
    assert.equal(config.serverHost, '0.0.0.0');
    assert.equal(config.serverPort, 8000);
    assert.equal(config.nodeEnv, 'production');
    assert.equal(config.sam3Checkpoint, '/models/sam3');
    assert.equal(config.uploadDir, '/var/lib/sam3/uploads');
    assert.equal(config.outputDir, '/var/lib/sam3/outputs');
    // Both exist in the image, owned by the user the server runs as.
    assert.ok(
      runText.includes(
        `install -d -o sam3 -g sam3 -m 0750 /var/lib/sam3 ${env.UPLOAD_DIR} ${env.OUTPUT_DIR}`,
      ),
    );
  });
});

describe('.dockerignore', () => {
  const rules = ignore().add(readRepoFile('.dockerignore'));
  const contextSources = dockerfile
    .getCOPYs()
    .filter((copy) => copy.getFromFlag() === null)
    .flatMap((copy) => copy.getArguments().slice(0, -1))
    .map((argument) => argument.getValue());

  it('lets in every file the Dockerfile copies from the context', () => {
    assert.deepEqual(contextSources, [
      'package.json',
      'package-lock.json',
      'CMakeLists.txt',
      'tsconfig.json',
      'native',
      'src',
      // The demo page (/demo): its sources, the TypeScript client it imports, its build script.
      'clients/typescript/src',
      'web',
      'scripts/build-web.mjs',
      'scripts/start.sh',
      'scripts/with-allocator.sh',
    ]);
    for (const file of [
      ...contextSources,
      'src/main.ts',
      'native/core/engine.cpp',
      'web/demo/src/main.ts',
      'clients/typescript/src/index.ts',
    ]) {
      assert.equal(rules.ignores(file), false, file);
    }
  });

  it('keeps secrets, weights, environments and build output out of the context', () => {
    for (const file of [
      '.env',
      'weights/sam3/manifest.json',
      '.venv/bin/python',
      'node_modules/express/package.json',
      'dist/src/main.js',
      'build/Release/sam3.node',
      '.git/config',
      'test/config.test.ts',
      'dist/web/demo/demo.js',
      'clients/python/src/sam3_client/client.py',
      'clients/typescript/README.md',
    ]) {
      assert.equal(rules.ignores(file), true, file);
    }
  });

  it('sends no tracked file that no COPY uses', async () => {
    const listed = await run('git', ['ls-files'], { cwd: repoPath() });
    assert.equal(listed.code, 0, listed.stderr);
    const sent = listed.stdout.split('\n').filter((file) => file !== '' && !rules.ignores(file));
    const unused = sent.filter(
      (file) => !contextSources.some((source) => file === source || file.startsWith(`${source}/`)),
    );
    assert.deepEqual(unused, []);
  });
});

describe('HEALTHCHECK command', () => {
  const command = healthcheckCommand();
  const probe = (port: number): Promise<number | null> =>
    run(process.execPath, command.slice(1), {
      env: { PATH: process.env.PATH ?? '', SERVER_PORT: String(port) },
      timeoutMs: 10_000,
    }).then((finished) => finished.code);
  const portOf = (server: TestServer): number => Number(new URL(server.url).port);

  let loading: TestServer;
  let ready: TestServer;
  before(async () => {
    loading = await startTestServer();
    ready = await startTestServer({ bundleDir: await exportTinyBundle() });
  });
  after(async () => {
    await loading.close();
    await ready.close();
  });

  it('exits 0 when /health answers 200 (models ready)', async () => {
    assert.equal((await fetch(`${ready.url}/health`)).status, 200);
    assert.equal(await probe(portOf(ready)), 0);
  });

  it('exits 1 while /health answers 503 (model loading)', async () => {
    assert.equal((await fetch(`${loading.url}/health`)).status, 503);
    assert.equal(await probe(portOf(loading)), 1);
  });

  it('exits 1 when nothing listens on SERVER_PORT', async () => {
    // A port that was free a moment ago and is closed now.
    const port = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const address = server.address();
        server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
      });
    });
    assert.equal(await probe(port), 1);
  });
});
