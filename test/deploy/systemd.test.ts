/**
 * deploy/sam3-server.service and deploy/sam3-server.env: `systemd-analyze verify` reports
 * nothing on the unit, `systemd-analyze security --offline` rates it, the hardening the
 * deployment relies on is there with its values, and the example environment is a
 * configuration the server accepts, consistent with the unit.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config';
import { configVariableNames, parseEnvFile, readRepoFile, run } from './tools';

const SYSTEMD_ANALYZE = '/usr/bin/systemd-analyze';
const UNIT_NAME = 'sam3-server.service';
const UNIT = readRepoFile('deploy', UNIT_NAME);
const ENV_EXAMPLE = parseEnvFile(readRepoFile('deploy', 'sam3-server.env'));

/** section -> key -> values in order (a key may repeat). */
type UnitFile = Map<string, Map<string, string[]>>;

function parseUnit(text: string): UnitFile {
  const unit: UnitFile = new Map();
  let section: Map<string, string[]> | undefined;
  for (const [index, line] of text.split('\n').entries()) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header !== null) {
      section = new Map();
      unit.set(header[1], section);
      continue;
    }
    const entry = /^(\w+)=(.*)$/.exec(line);
    assert.ok(entry !== null && section !== undefined, `line ${index + 1}: ${line}`);
    section.set(entry[1], [...(section.get(entry[1]) ?? []), entry[2]]);
  }
  return unit;
}

const unit = parseUnit(UNIT);
const service = unit.get('Service') ?? new Map<string, string[]>();

/** The one value of a [Service] key. */
function value(key: string): string | undefined {
  const values = service.get(key);
  assert.ok(values === undefined || values.length === 1, `${key} set ${values?.length} times`);
  return values?.[0];
}

function seconds(text: string | undefined): number {
  const match = /^(\d+)s?$/.exec(text ?? '');
  assert.ok(match !== null, `a number of seconds, got ${text}`);
  return Number(match[1]);
}

describe('systemd unit', () => {
  let scratch: string;
  let checked: string;
  before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), 'sam3-systemd-'));
    // verify fails when ExecStart's program is not an executable file on this machine: bash is
    // at /usr/bin/bash here as on the hosts the unit is for. The launcher's path is checked
    // below; the copy is the unit as shipped.
    checked = path.join(scratch, UNIT_NAME);
    await writeFile(checked, UNIT);
  });
  after(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('passes systemd-analyze verify with nothing to report', async () => {
    const result = await run(SYSTEMD_ANALYZE, ['verify', checked]);
    // verify exits 0 on unknown keys and unparsable values: its output is the verdict.
    assert.deepEqual(result, { code: 0, stdout: '', stderr: '' });
  });

  it('is what verify checks: a broken copy is reported', async () => {
    const broken = path.join(scratch, 'broken', UNIT_NAME);
    await mkdir(path.dirname(broken));
    const text = UNIT.replace('ProtectSystem=strict', 'ProtectSystem=strikt').replace(
      'RestrictNamespaces=yes',
      'RestrictNamespace=yes',
    );
    await writeFile(broken, text);
    const result = await run(SYSTEMD_ANALYZE, ['verify', broken]);
    assert.match(result.stderr, /Failed to parse protect system value, ignoring: strikt/);
    assert.match(result.stderr, /Unknown key.*'RestrictNamespace'/);
  });

  it('rates OK or better in systemd-analyze security --offline', async () => {
    const result = await run(SYSTEMD_ANALYZE, ['security', '--offline=yes', '--no-pager', checked]);
    assert.equal(result.code, 0, result.stderr);
    const overall = /Overall exposure level for sam3-server\.service: (\d+\.\d)/.exec(
      result.stdout,
    );
    assert.ok(overall !== null, result.stdout.slice(-500));
    // 0 is fully locked down, 10 is no sandbox at all; the GPU needs devices and W+X memory.
    assert.ok(Number(overall[1]) < 4, `exposure ${overall[1]}`);
  });

  it("runs npm start's launcher (node on the package entry point, on mimalloc) as a dedicated user, from EnvironmentFile", () => {
    const packageJson = JSON.parse(readRepoFile('package.json')) as {
      main: string;
      scripts: Record<string, string>;
    };
    assert.equal(value('Type'), 'exec');
    assert.equal(value('User'), 'sam3');
    assert.equal(value('Group'), 'sam3');
    assert.equal(value('EnvironmentFile'), '/etc/sam3-server/sam3-server.env');
    assert.equal(value('WorkingDirectory'), '/opt/sam3-server');
    assert.equal(value('ExecStart'), '/usr/bin/bash /opt/sam3-server/scripts/start.sh');
    assert.equal(packageJson.scripts.start, 'bash scripts/start.sh');
    // The launcher (test/api/start-script.test.ts runs it) execs node on the entry point.
    assert.match(
      readRepoFile('scripts', 'start.sh'),
      new RegExp(`exec bash scripts/with-allocator.sh node ${packageJson.main} "\\$@"`),
    );
    assert.deepEqual(service.get('Environment'), ['NODE_ENV=production']);
    assert.deepEqual(unit.get('Install')?.get('WantedBy'), ['multi-user.target']);
  });

  it('restarts on failure and stops with SIGTERM, waiting longer than the drain', () => {
    assert.equal(value('Restart'), 'on-failure');
    assert.equal(seconds(value('RestartSec')), 5);
    assert.equal(value('KillSignal'), 'SIGTERM');
    assert.equal(value('KillMode'), 'mixed');
    assert.equal(value('LimitNOFILE'), '65536');
    const stop = seconds(value('TimeoutStopSec'));
    const drain = Number(ENV_EXAMPLE.SHUTDOWN_TIMEOUT_SECONDS);
    const defaultDrain = loadConfig({}, { cudaDeviceCount: 1 }).shutdownTimeoutSeconds;
    assert.ok(stop > drain && stop > defaultDrain, `${stop} s > ${drain} s, ${defaultDrain} s`);
  });

  it('has the sandboxing the issue lists, with the GPU devices still reachable', () => {
    const expected: Record<string, string> = {
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      PrivateTmp: 'yes',
      ProtectHome: 'yes',
      PrivateDevices: 'no',
      DevicePolicy: 'closed',
      DeviceAllow: 'char-nvidia* rw',
      ProtectKernelTunables: 'yes',
      ProtectKernelModules: 'yes',
      ProtectControlGroups: 'yes',
      RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX',
      RestrictNamespaces: 'yes',
      LockPersonality: 'yes',
      SystemCallArchitectures: 'native',
      CapabilityBoundingSet: '',
    };
    for (const [key, wanted] of Object.entries(expected)) {
      assert.equal(value(key), wanted, key);
    }
    // V8's JIT needs writable and executable pages.
    assert.equal(service.has('MemoryDenyWriteExecute'), false);
  });

  it('may write only the upload and output directories of the example environment', () => {
    assert.equal(value('ReadWritePaths'), `${ENV_EXAMPLE.UPLOAD_DIR} ${ENV_EXAMPLE.OUTPUT_DIR}`);
    assert.equal(service.has('ReadOnlyPaths'), false);
  });
});

describe('example environment (deploy/sam3-server.env)', () => {
  it('sets only variables the server reads, with values it accepts', () => {
    const known = configVariableNames();
    assert.deepEqual(
      Object.keys(ENV_EXAMPLE).filter((name) => !known.has(name)),
      [],
    );
    const config = loadConfig(ENV_EXAMPLE, { cudaDeviceCount: 1 });
    assert.equal(config.sam3Checkpoint, '/opt/sam3-server/weights/sam3');
    assert.equal(config.imageModelDevice, 'cuda:0');
    assert.deepEqual(config.videoDevices, ['cuda:0']);
    assert.equal(config.uploadDir, '/var/lib/sam3-server/uploads');
    assert.equal(config.outputDir, '/var/lib/sam3-server/outputs');
    assert.equal(config.shutdownTimeoutSeconds, 30);
  });
});
