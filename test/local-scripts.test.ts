import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { describe, it } from 'node:test';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmulatorPortTaken, freePort, onAFreePort, portInUse, startEmulator } from '../scripts/local/emulators';

/** The newcomer's commands (`npm run token`, `npm start`) when given what people get wrong. */
const run = (script: string, args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, ['--import', 'tsx', script, ...args], { env: { ...process.env, METADATA_SERVER_DETECTION: 'none', ...env }, encoding: 'utf8', timeout: 60_000 });

describe('npm run token', () => {
  const cases: [string, string[], RegExp][] = [
    ['the email without --email (or npm taking --email for itself)', ['alice@example.com'], /Unexpected argument 'alice@example\.com'.*options go after `--`, the email after --email/],
    ['no email at all', [], /^No --email given/],
    ['an address that is none', ['--email', 'alice'], /^--email alice is not an email address/],
    ['a lifetime under a minute', ['--email', 'alice@example.com', '--ttl', '5'], /^--ttl 5 is not a whole number of seconds from 60 to 2592000/],
  ];
  for (const [what, args, says] of cases) {
    it(`says what was wrong with ${what}, and how to ask, without a stack trace`, () => {
      const r = run('scripts/token.ts', args);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, says);
      assert.match(r.stderr, /usage: npm run --silent token -- --email alice@example\.com/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(r.stdout, '');
    });
  }
});

describe('npm start', () => {
  it('names every busy port and the variable that moves it, before starting anything', async () => {
    const listen = () => new Promise<Server>((resolve) => { const srv = createServer(); srv.listen(0, '127.0.0.1', () => resolve(srv)); });
    const [api, pubsub] = await Promise.all([listen(), listen()]);
    const port = (srv: Server) => (srv.address() as { port: number }).port;
    try {
      const started = Date.now();
      const r = run('scripts/start.ts', [], { PORT: String(port(api)), PUBSUB_EMULATOR_PORT: String(port(pubsub)), FIRESTORE_EMULATOR_PORT: String(await freePort()), ABP_DATA_DIR: '/tmp/abp-start-busy-ports' });
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.match(r.stderr, new RegExp(`Ports ${port(api)} \\(PORT\\), ${port(pubsub)} \\(PUBSUB_EMULATOR_PORT\\) already in use .*choose other ports with PORT, PUBSUB_EMULATOR_PORT`));
      assert.doesNotMatch(r.stdout, /Starting the Pub\/Sub and Firestore emulators/, 'nothing started');
      assert.ok(Date.now() - started < 30_000, 'refused at once, not after the emulators came up');
    } finally {
      api.close();
      pubsub.close();
    }
  });
  for (const [what, env, says] of [
    ['an emulator port that is no number', { PUBSUB_EMULATOR_PORT: 'abc' }, /^Invalid configuration:\n {2}PUBSUB_EMULATOR_PORT: /],
    ['PORT=0', { PORT: '0' }, /^PORT=0 is not supported by npm start/],
  ] as const) {
    it(`refuses ${what}, saying so without a stack trace`, () => {
      const r = run('scripts/start.ts', [], { ...env, ABP_DATA_DIR: '/tmp/abp-start-bad-config' });
      assert.equal(r.status, 2, r.stdout + r.stderr);
      assert.match(r.stderr, says);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });
  }

  it('stops the emulators it started when its terminal closes (SIGHUP), leaving their ports free', async () => {
    const [api, pubsubPort, firestorePort] = [await freePort(), await freePort(), await freePort()];
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/start.ts'], {
      env: { ...process.env, METADATA_SERVER_DETECTION: 'none', PORT: String(api), PUBSUB_EMULATOR_PORT: String(pubsubPort), FIRESTORE_EMULATOR_PORT: String(firestorePort), ABP_DATA_DIR: '/tmp/abp-start-sighup' },
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      // Hung up while starting, once the Pub/Sub emulator's Java process serves its port.
      const deadline = Date.now() + 60_000;
      while (!(await portInUse(pubsubPort))) {
        assert.ok(Date.now() < deadline, 'the Pub/Sub emulator did not start');
        await new Promise((r) => setTimeout(r, 100));
      }
      child.kill('SIGHUP');
      assert.equal(await exited, 129);
      // Killed on its way out (SIGKILL to their process groups), they take a moment to be gone.
      const freed = Date.now() + 10_000;
      while ((await portInUse(pubsubPort)) || (await portInUse(firestorePort))) {
        assert.ok(Date.now() < freed, 'the emulator ports are free');
        await new Promise((r) => setTimeout(r, 100));
      }
      // gcloud is given --host-port=127.0.0.1:P, its Java child --port=P.
      const left = spawnSync('pgrep', ['-f', `(:|--port=)(${pubsubPort}|${firestorePort})( |$)`], { encoding: 'utf8' });
      assert.equal(left.stdout, '', 'no emulator process left');
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('npm test', () => {
  it('fails, naming the filter, when no test file matches it (node --test would pass with none)', () => {
    const r = run('scripts/test.ts', ['test/no-such-suite']);
    assert.equal(r.status, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /^No test file under test\/ matches test\/no-such-suite/);
  });
});

describe('the emulators', () => {
  it('refuses a port another process takes between the check and the emulator binding it, even one that answers 200', async () => {
    const port = await freePort();
    const logDir = mkdtempSync(join(tmpdir(), 'abp-port-race-'));
    const starting = startEmulator('pubsub', port, { project: 'abp-port-race', logDir });
    const outcome = starting.then(() => 'started', (err: Error) => err);
    // The log is opened after the check and before gcloud is spawned; the emulator's JVM binds its port seconds later.
    while (!existsSync(join(logDir, 'pubsub-emulator.log'))) await new Promise((r) => setTimeout(r, 5));
    const squatter = createHttpServer((_req, res) => res.end('not the emulator'));
    await new Promise<void>((resolve) => squatter.listen(port, '127.0.0.1', resolve));
    try {
      const result = await outcome;
      if (result === 'started') await (await starting).stop();
      assert.ok(result instanceof EmulatorPortTaken, `expected the port to be refused, got ${String(result)}`);
      assert.match(result.message, new RegExp(`^Port ${port} for the pubsub emulator is already in use.*PUBSUB_EMULATOR_PORT`));
      // The emulator that could not bind (the Pub/Sub one hangs on rather than exiting) is gone with its group.
      const left = spawnSync('pgrep', ['-f', `(:|--port=)${port}( |$)`], { encoding: 'utf8' });
      assert.equal(left.stdout, '', 'no emulator process left');
    } finally {
      squatter.close();
      rmSync(logDir, { recursive: true, force: true });
    }
  });

  it('on a free port of its choosing, tries another port when one is taken before it binds, and gives up after three', async () => {
    const tried: number[] = [];
    const picks = [5001, 5002, 5003, 5004];
    const takenTwice = (port: number) => {
      tried.push(port);
      return tried.length <= 2 ? Promise.reject(new EmulatorPortTaken(`Port ${port} taken`)) : Promise.resolve(port);
    };
    assert.equal(await onAFreePort(takenTwice, async () => picks.shift()!), 5003);
    assert.deepEqual(tried, [5001, 5002, 5003]);

    let attempts = 0;
    await assert.rejects(onAFreePort((port) => (attempts++, Promise.reject(new EmulatorPortTaken(`Port ${port} taken`))), async () => 6000 + attempts), /Port 6002 taken/);
    assert.equal(attempts, 3);
    // Any other failure is not a reason to try elsewhere.
    let others = 0;
    await assert.rejects(onAFreePort(() => (others++, Promise.reject(new Error('no java'))), async () => 7000), /no java/);
    assert.equal(others, 1);
  });
});
