import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { describe, it } from 'node:test';

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
      const r = run('scripts/start.ts', [], { PORT: String(port(api)), PUBSUB_EMULATOR_PORT: String(port(pubsub)), FIRESTORE_EMULATOR_PORT: '0', ABP_DATA_DIR: '/tmp/abp-start-busy-ports' });
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.match(r.stderr, new RegExp(`Ports ${port(api)} \\(PORT\\), ${port(pubsub)} \\(PUBSUB_EMULATOR_PORT\\) already in use .*choose other ports with PORT, PUBSUB_EMULATOR_PORT`));
      assert.doesNotMatch(r.stdout, /Starting the Pub\/Sub and Firestore emulators/, 'nothing started');
      assert.ok(Date.now() - started < 30_000, 'refused at once, not after the emulators came up');
    } finally {
      api.close();
      pubsub.close();
    }
  });
});
