import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { isAuthApiError } from '@supabase/supabase-js';
import { config, resetConfigForTests, supabaseAnonKey } from '../shared/config';
import { devUserId } from '../functions/adapters/dev-identity';
import { verifyAccessToken } from '../functions/adapters/supabase-identity';
import { resolveUserIdByEmail } from '../functions/adapters/user-directory';
import { startGoTrueStandIn, type GoTrueStandIn, type GoTrueUser } from './helpers/gotrue-stand-in';

/**
 * The user directory against a local stand-in for Supabase Auth's admin API (test/helpers/gotrue-stand-in.ts), through
 * the real supabase-js AuthClient. No emulators, no network, nothing that touches Firestore.
 */

const ENV_KEYS = [
  'ABP_ENV',
  'SUPABASE_URL',
  'SUPABASE_ANON_KEY',
  'SUPABASE_SERVICE_ROLE_KEY',
  'PUBLIC_BASE_URL',
  'ABP_HASH_KEY',
  'ABP_CLICK_SIGNING_KEY',
] as const;
type EnvKey = (typeof ENV_KEYS)[number];
const savedEnv = new Map(ENV_KEYS.map((k) => [k, process.env[k]]));

/** Replaces the variables config() reads (and only those), then makes config() parse them again. */
function useEnv(env: Partial<Record<EnvKey, string>>): void {
  for (const k of ENV_KEYS) delete process.env[k];
  Object.assign(process.env, env);
  resetConfigForTests();
}

function restoreEnv(): void {
  for (const [k, v] of savedEnv) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  resetConfigForTests();
}

let standIn: GoTrueStandIn;
before(async () => (standIn = await startGoTrueStandIn()));
after(async () => {
  restoreEnv();
  await standIn.close();
});
afterEach(restoreEnv);

let seq = 0;
const uniqueEmail = (label: string) => `${label}.${process.pid}.${++seq}@example.com`;
const invitesFor = (email: string) => standIn.invites.filter((i) => i.email === email);
const usersWith = (email: string) => [...standIn.users.values()].filter((u) => u.email === email);
/** Runs `fn` and returns the requests the stand-in received meanwhile, as `METHOD path?query -> status`. */
async function traffic<T>(fn: () => Promise<T>): Promise<{ result: T; calls: string[] }> {
  const from = standIn.requests.length;
  const result = await fn();
  const calls = standIn.requests.slice(from).map((r) => {
    const q = new URLSearchParams(r.query).toString();
    return `${r.method} ${r.path}${q ? `?${q}` : ''} -> ${r.status}`;
  });
  return { result, calls };
}

describe('resolveUserIdByEmail with a service role key (Supabase Auth admin API)', () => {
  /** More than one page of 1000, with the account we look for the oldest, i.e. on the last page (newest first). */
  const POPULATION = 2_345;
  let veteran: GoTrueUser;

  before(() => {
    const start = Date.UTC(2023, 0, 1);
    veteran = standIn.addUser('veteran@example.com', { createdAt: new Date(start) });
    for (let i = 1; i < POPULATION; i++) standIn.addUser(`member${i}@example.com`, { createdAt: new Date(start + i * 60_000) });
  });

  beforeEach(() =>
    useEnv({ ABP_ENV: 'local', SUPABASE_URL: standIn.url, SUPABASE_SERVICE_ROLE_KEY: standIn.serviceRoleKey, SUPABASE_ANON_KEY: standIn.anonKey }),
  );

  it('invites a new email and resolves to the id Supabase assigned, with exactly one invite', async () => {
    const email = uniqueEmail('newcomer');
    const { result: id, calls } = await traffic(() => resolveUserIdByEmail(email));

    const invites = invitesFor(email);
    assert.equal(invites.length, 1, 'exactly one invite for that email');
    assert.equal(id, invites[0]!.userId);
    assert.deepEqual(usersWith(email).map((u) => u.id), [id]);
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(id, devUserId(email), 'the id comes from Supabase, not from the dev derivation');
    assert.deepEqual(calls, ['POST /auth/v1/invite -> 200'], 'no user listing when the invite succeeds');

    const sent = standIn.requests.findLast((r) => r.path === '/auth/v1/invite')!;
    assert.equal(sent.headers.apikey, standIn.serviceRoleKey);
    assert.equal(sent.headers.authorization, `Bearer ${standIn.serviceRoleKey}`);
    assert.equal((sent.body as { email: string }).email, email);
  });

  it('resolves an already registered email to the existing account, paging listUsers 1000 at a time', async () => {
    const usersBefore = standIn.users.size;
    const { result: id, calls } = await traffic(() => resolveUserIdByEmail('veteran@example.com'));

    assert.equal(id, veteran.id);
    assert.deepEqual(calls, [
      'POST /auth/v1/invite -> 422',
      'GET /auth/v1/admin/users?page=1&per_page=1000 -> 200',
      'GET /auth/v1/admin/users?page=2&per_page=1000 -> 200',
      'GET /auth/v1/admin/users?page=3&per_page=1000 -> 200',
    ]);
    assert.equal(invitesFor('veteran@example.com').length, 0, 'a registered user gets no invite');
    assert.equal(standIn.users.size, usersBefore, 'no account created');
  });

  it('finds a registered account whatever the case of the email (Supabase stores emails lower-cased)', async () => {
    const { result: id, calls } = await traffic(() => resolveUserIdByEmail('Veteran@Example.COM'));
    assert.equal(id, veteran.id);
    assert.equal(calls[0], 'POST /auth/v1/invite -> 422');
  });

  it('resolves someone invited earlier who has not accepted yet to the same account (Supabase re-invites)', async () => {
    const email = uniqueEmail('pending');
    const first = await resolveUserIdByEmail(email);
    const { result: second, calls } = await traffic(() => resolveUserIdByEmail(email));

    assert.equal(second, first);
    assert.deepEqual(calls, ['POST /auth/v1/invite -> 200']);
    assert.equal(usersWith(email).length, 1);
    assert.equal(invitesFor(email).length, 2, 'Supabase sends the invitation again');
  });

  it('surfaces an error for a wrong service role key instead of inventing an id', async () => {
    useEnv({ ABP_ENV: 'local', SUPABASE_URL: standIn.url, SUPABASE_SERVICE_ROLE_KEY: 'not-the-service-role-key', SUPABASE_ANON_KEY: standIn.anonKey });
    const email = uniqueEmail('locked-out');
    const from = standIn.requests.length;

    await assert.rejects(resolveUserIdByEmail(email), (err: unknown) => {
      assert.ok(isAuthApiError(err), `expected an AuthApiError, got ${String(err)}`);
      assert.equal(err.status, 401);
      assert.match(err.message, /Invalid API key/);
      return true;
    });
    assert.ok(standIn.requests.length > from, 'the stand-in was asked');
    assert.ok(standIn.requests.slice(from).every((r) => r.status === 401));
    assert.equal(invitesFor(email).length, 0);
    assert.equal(usersWith(email).length, 0);
  });

  it('surfaces a refusal of the address at once, without paging through every user', async () => {
    const email = uniqueEmail('rate-limited');
    standIn.refuseNext('/auth/v1/invite', { status: 429, errorCode: 'over_email_send_rate_limit', message: 'email rate limit exceeded' });
    const { result, calls } = await traffic(() => resolveUserIdByEmail(email).then(() => undefined, (err: unknown) => err));
    assert.ok(isAuthApiError(result), `expected an AuthApiError, got ${String(result)}`);
    assert.equal(result.status, 429);
    assert.deepEqual(calls, ['POST /auth/v1/invite -> 429']);
  });

  it('refuses a user id from Supabase that cannot key a membership, as a bad gateway', async () => {
    standIn.addUser('odd.id@example.com', { id: 'users/odd' });
    await assert.rejects(resolveUserIdByEmail('odd.id@example.com'), (err: { code?: string }) => err.code === 'bad_gateway');
  });

  it('surfaces an error when given the anon key instead of the service role key', async () => {
    // The gateway accepts the anon key as an apikey; GoTrue then refuses it as a bearer without an admin role.
    useEnv({ ABP_ENV: 'local', SUPABASE_URL: standIn.url, SUPABASE_SERVICE_ROLE_KEY: standIn.anonKey });
    const email = uniqueEmail('anon');

    await assert.rejects(resolveUserIdByEmail(email), (err: unknown) => {
      assert.ok(isAuthApiError(err), `expected an AuthApiError, got ${String(err)}`);
      assert.equal(err.status, 403);
      assert.equal(err.code, 'not_admin');
      return true;
    });
    assert.equal(invitesFor(email).length, 0);
  });
});

describe('resolveUserIdByEmail without a service role key', () => {
  it('locally gives the dev identity id for the email, without calling Supabase', async () => {
    useEnv({ ABP_ENV: 'local', SUPABASE_URL: standIn.url });
    const from = standIn.requests.length;

    const id = await resolveUserIdByEmail('dev.colleague@example.com');
    assert.equal(id, devUserId('dev.colleague@example.com'));
    assert.equal(await resolveUserIdByEmail('dev.colleague@example.com'), id, 'same email, same id');
    assert.equal(await resolveUserIdByEmail('Dev.Colleague@Example.com'), id);
    assert.notEqual(await resolveUserIdByEmail('someone.else@example.com'), id);
    assert.equal(standIn.requests.length, from, 'no request reached Supabase');
  });

  it('throws in production rather than deriving an id', async () => {
    useEnv({
      ABP_ENV: 'production',
      SUPABASE_URL: standIn.url,
      PUBLIC_BASE_URL: 'https://abp.example.com',
      ABP_HASH_KEY: 'h'.repeat(32),
      ABP_CLICK_SIGNING_KEY: 'c'.repeat(32),
    });
    const from = standIn.requests.length;

    await assert.rejects(resolveUserIdByEmail('prod.colleague@example.com'), /SUPABASE_SERVICE_ROLE_KEY is required/);
    assert.equal(standIn.requests.length, from);
  });
});

describe('the Supabase anon key', () => {
  const production = { ABP_ENV: 'production', SUPABASE_URL: 'https://ref.supabase.co', PUBLIC_BASE_URL: 'https://abp.example.com', ABP_HASH_KEY: 'h'.repeat(32), ABP_CLICK_SIGNING_KEY: 'c'.repeat(32) } as const;

  it('is required in production where tokens are verified, and named when missing', async () => {
    useEnv(production);
    assert.throws(() => supabaseAnonKey(), /production requires SUPABASE_ANON_KEY/);
    await assert.rejects(verifyAccessToken('a.b.c'), /production requires SUPABASE_ANON_KEY/, 'a misconfiguration, not a refused token');
    useEnv({ ...production, SUPABASE_ANON_KEY: 'anon-key' });
    assert.equal(supabaseAnonKey(), 'anon-key');
  });

  it('stops the API from starting in production without it, and each function without the secrets it is given', () => {
    const start = (module: string, env: Record<string, string>) =>
      spawnSync(process.execPath, ['--import', 'tsx', '-e', `require('./functions/${module}.ts')`], {
        cwd: join(__dirname, '..'), env: { PATH: process.env.PATH!, METADATA_SERVER_DETECTION: 'none', GOOGLE_CLOUD_PROJECT: 'abp-test', ...env }, encoding: 'utf8', timeout: 60_000,
      });
    const without = start('api/index', production);
    assert.notEqual(without.status, 0);
    assert.match(without.stderr, /production requires SUPABASE_ANON_KEY/);
    // Manual payout runs and member invites would otherwise answer 500 on first use.
    const anonOnly = start('api/index', { ...production, SUPABASE_ANON_KEY: 'anon-key' });
    assert.notEqual(anonOnly.status, 0);
    assert.match(anonOnly.stderr, /production requires STRIPE_SECRET_KEY, SUPABASE_SERVICE_ROLE_KEY/);
    const withKeys = start('api/index', { ...production, SUPABASE_ANON_KEY: 'anon-key', STRIPE_SECRET_KEY: 'sk_test_x', SUPABASE_SERVICE_ROLE_KEY: 'service-role' });
    assert.equal(withKeys.status, 0, withKeys.stderr);
    for (const [module, keys] of [['jobs/payouts', ['STRIPE_SECRET_KEY']], ['webhooks/stripe', ['STRIPE_WEBHOOK_SECRET', 'STRIPE_CONNECT_WEBHOOK_SECRET', 'STRIPE_SECRET_KEY']]] as const) {
      const missing = start(module, production);
      assert.notEqual(missing.status, 0, module);
      assert.match(missing.stderr, new RegExp(`production requires ${keys.join(', ')}`), module);
      // The webhook needs both endpoints' secrets (with one, half of Stripe's events would be refused) and the key
      // it reads an account with.
      if (keys.length > 1) assert.notEqual(start(module, { ...production, [keys[0]]: 'set' }).status, 0, module);
      assert.equal(start(module, { ...production, ...Object.fromEntries(keys.map((k) => [k, 'set'])) }).status, 0, module);
    }
  });

  it('still lets functions that never verify tokens start in production without it', () => {
    useEnv(production);
    assert.doesNotThrow(() => config());
  });

  it('has a local default', () => {
    useEnv({ ABP_ENV: 'local' });
    assert.equal(supabaseAnonKey(), 'local-anon-key');
  });
});
