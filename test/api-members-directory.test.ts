import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGoTrueStandIn, type GoTrueStandIn } from './helpers/gotrue-stand-in';
import { newOrg, startTestStack, type TestStack } from './helpers/stack';
import { eventually } from './helpers/wait';

/**
 * Inviting members through the API with Supabase Auth in the loop: the stack's SUPABASE_URL is the GoTrue
 * stand-in, which also serves the stack's JWKS, so tokens verify and invitations go through the same URL.
 */
let s: TestStack;
let standIn: GoTrueStandIn;
let org = { orgId: '', token: '' };
let seq = 0;
let jwks: () => unknown = () => ({ keys: [] });
const email = (label: string) => `${label}.${++seq}@members.example`;

before(async () => {
  standIn = await startGoTrueStandIn({ jwks: () => jwks() });
  s = await startTestStack({ SUPABASE_URL: standIn.url, SUPABASE_SERVICE_ROLE_KEY: standIn.serviceRoleKey, SUPABASE_ANON_KEY: standIn.anonKey, SUPABASE_JWKS_MAX_AGE_SECONDS: '1' });
  const identity = await import('../functions/adapters/dev-identity');
  jwks = () => identity.devJwks();
  org = await newOrg(s, 'owner@members.example');
});
after(async () => {
  await s.close();
  await standIn.close();
});

const invite = (address: string, role = 'analyst') => s.call('POST', `/v1/orgs/${org.orgId}/members`, { auth: org.token, body: { email: address, role } });
const inviteCalls = () => standIn.requests.filter((r) => r.path === '/auth/v1/invite').length;

describe('access tokens and the project\'s signing keys', () => {
  /** The caller's token with another key id: no key the project publishes can verify it. */
  const withUnknownKey = (token: string, kid: string) => {
    const [header, ...rest] = token.split('.');
    const h = JSON.parse(Buffer.from(header!, 'base64url').toString()) as Record<string, unknown>;
    return [Buffer.from(JSON.stringify({ ...h, kid })).toString('base64url'), ...rest].join('.');
  };
  const campaigns = (token: string) => s.call('GET', `/v1/orgs/${org.orgId}/campaigns`, { auth: token });
  const calls = (path: string) => standIn.requests.filter((r) => r.path === `/auth/v1${path}`).length;
  const maxAge = () => new Promise((r) => setTimeout(r, 1100)); // SUPABASE_JWKS_MAX_AGE_SECONDS=1 in this file
  let fresh = 0;
  /** A new token for the owner, so that no token verified a moment ago answers for it. */
  const newToken = () => s.token('owner@members.example', { ttlSeconds: 3600 + ++fresh });

  it('refuses tokens naming a key the project does not publish without asking Supabase Auth about each', async () => {
    const jwksBefore = calls('/.well-known/jwks.json');
    const userBefore = calls('/user');
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => campaigns(withUnknownKey(org.token, `made-up-${i}`))));
    assert.deepEqual(answers.map((a) => a.status), Array(20).fill(401));
    assert.ok(calls('/.well-known/jwks.json') - jwksBefore <= 2, `JWKS fetched ${calls('/.well-known/jwks.json') - jwksBefore} times for 20 tokens`);
    assert.equal(calls('/user') - userBefore, 0, 'no user lookup at Supabase');
  });

  it('refuses tokens of an algorithm Supabase does not sign with, or an asymmetric one naming no key, without asking Supabase Auth', async () => {
    const withHeader = (token: string, header: Record<string, unknown>) => [Buffer.from(JSON.stringify(header)).toString('base64url'), ...token.split('.').slice(1)].join('.');
    const jwksBefore = calls('/.well-known/jwks.json');
    const userBefore = calls('/user');
    const forged = [{ alg: 'none', kid: 'made-up' }, { alg: 'PS256', kid: 'made-up' }, { alg: 'ES384', kid: 'made-up' }, { alg: 'ES256' }, { typ: 'JWT' }];
    const answers = await Promise.all(forged.map((h) => campaigns(withHeader(org.token, h))));
    assert.deepEqual(answers.map((a) => a.status), forged.map(() => 401));
    assert.equal(calls('/.well-known/jwks.json') - jwksBefore, 0, 'no JWKS fetch');
    assert.equal(calls('/user') - userBefore, 0, 'no user lookup at Supabase');
  });

  it('stops admitting tokens of a key rotated out of the JWKS within its max age, and admits them again once it is back', async () => {
    assert.equal((await campaigns(org.token)).status, 200);
    const published = jwks;
    jwks = () => ({ keys: [] });
    try {
      await maxAge();
      // The token verified a moment ago is checked against the set as refetched, not kept for its minute.
      await eventually(async () => ((await campaigns(org.token)).status === 401 ? true : undefined), 'the rotated-out key refused', 5000);
      assert.equal((await campaigns(newToken())).status, 401);
    } finally {
      jwks = published;
    }
    await maxAge();
    assert.equal((await campaigns(newToken())).status, 200);
    assert.equal((await campaigns(org.token)).status, 200);
  });

  it('does not sign users out while the JWKS cannot be fetched: the set fetched lately still verifies', async () => {
    await maxAge();
    const before = calls('/.well-known/jwks.json');
    standIn.refuseNext('/auth/v1/.well-known/jwks.json', { status: 503, errorCode: 'unexpected_failure', message: 'upstream unavailable' });
    const r = await campaigns(newToken());
    assert.equal(r.status, 200, r.text);
    assert.equal(calls('/.well-known/jwks.json') - before, 1, 'the refetch was tried, and refused');
  });

  it('answers 503, not 401, when Supabase Auth cannot verify a shared-secret token, so that the client retries instead of signing its user out', async () => {
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const [, payload, signature] = org.token.split('.');
    const sharedSecretToken = `${enc({ alg: 'HS256', typ: 'JWT' })}.${payload}.${signature}`;
    standIn.refuseNext('/auth/v1/user', { status: 503, errorCode: 'unexpected_failure', message: 'upstream unavailable' });
    const down = await campaigns(sharedSecretToken);
    assert.equal(down.status, 503, down.text);
    assert.match(down.body.error.message, /retry/);
    // Auth answering, the same token is refused for what it is.
    assert.equal((await campaigns(sharedSecretToken)).status, 401);
    assert.equal((await campaigns(org.token)).status, 200);
  });
});

describe('inviting a member through Supabase Auth', () => {
  it('invites a newcomer and keys the membership by the id Supabase assigned', async () => {
    const address = email('newcomer');
    const r = await invite(address);
    assert.equal(r.status, 201, r.text);
    const sent = standIn.invites.filter((i) => i.email === address);
    assert.equal(sent.length, 1);
    assert.equal(r.body.userId, sent[0]!.userId);
  });

  it('answers 409 to an existing member without asking Supabase, so no second invitation is sent', async () => {
    const address = email('twice');
    assert.equal((await invite(address)).status, 201);
    const before = inviteCalls();
    const again = await invite(address.toUpperCase(), 'admin');
    assert.equal(again.status, 409, again.text);
    assert.match(again.body.error.message, /already a member/);
    assert.equal(inviteCalls(), before, 'Supabase was not asked');
    assert.equal((await invite('owner@members.example')).status, 409);
    assert.equal(inviteCalls(), before);
  });

  const refusals: [string, { status: number; errorCode: string; message: string }, number, RegExp][] = [
    ['a refused address', { status: 400, errorCode: 'email_address_invalid', message: 'Email address "x" is invalid' }, 400, /Supabase Auth refused to invite .*is invalid/],
    ['an account it cannot find again', { status: 422, errorCode: 'email_exists', message: 'A user with this email address has already been registered' }, 409, /already been registered/],
    ['an email rate limit', { status: 429, errorCode: 'over_email_send_rate_limit', message: 'email rate limit exceeded' }, 503, /retry/],
    ['an outage', { status: 503, errorCode: 'unexpected_failure', message: 'upstream unavailable' }, 503, /retry/],
    ['a refusal of our credentials', { status: 403, errorCode: 'not_admin', message: 'User not allowed' }, 502, /SUPABASE_SERVICE_ROLE_KEY/],
  ];
  for (const [what, refusal, status, message] of refusals) {
    it(`answers ${status} to ${what}, and adds no member`, async () => {
      const address = email('refused');
      standIn.refuseNext('/auth/v1/invite', refusal);
      const r = await invite(address);
      assert.equal(r.status, status, r.text);
      assert.equal(r.body.error.code, { 400: 'bad_request', 409: 'conflict', 502: 'bad_gateway', 503: 'unavailable' }[status]);
      assert.match(r.body.error.message, message);
      if (status === 400) assert.deepEqual(r.body.error.details.map((d: { field: string }) => d.field), ['email']);
      const members = await s.call('GET', `/v1/orgs/${org.orgId}/members?limit=200`, { auth: org.token });
      assert.ok(!members.body.items.some((m: { email: string }) => m.email === address));
    });
  }
});
