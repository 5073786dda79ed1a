import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { collections } from '../shared/names';
import { campaignBody, newOrg, startTestStack, type TestStack } from './helpers/stack';

let s: TestStack;
before(async () => (s = await startTestStack()));
after(() => s.close());

describe('identity', () => {
  it('answers 401 without credentials, with a forged token, an expired token or an unknown API key', async () => {
    assert.equal((await s.call('GET', '/v1/orgs')).status, 401);
    const good = s.token('eve@example.com');
    const [h, p] = good.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: 'someone-else' })).toString('base64url')}.${good.split('.')[2]}`;
    for (const auth of ['not-a-jwt', forged, s.token('eve@example.com', { now: Date.now() - 48 * 3600e3 }), 'abp_live_nope']) {
      const r = await s.call('GET', '/v1/orgs', { auth });
      assert.equal(r.status, 401, auth);
      assert.equal(r.body.error.code, 'unauthorized');
    }
    assert.equal((await s.call('GET', '/v1/orgs', { auth: good })).status, 200);
  });

  it('says why a well-signed token is refused when it was issued for another stack', async () => {
    const elsewhere = s.token('eve@example.com', { issuerBase: 'http://127.0.0.1:1' });
    const r = await s.call('GET', '/v1/orgs', { auth: elsewhere });
    assert.equal(r.status, 401);
    assert.match(r.body.error.message, /issued by http:\/\/127\.0\.0\.1:1\/auth\/v1, not by this deployment's auth \(http:\/\/127\.0\.0\.1:\d+\/auth\/v1\)/);
  });

  it('mints `npm run token` tokens for the port `npm start` last ran on, unless told one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'abp-token-'));
    try {
      writeFileSync(join(dir, 'running-stack.json'), JSON.stringify({ authBaseUrl: 'http://127.0.0.1:18080' }));
      const issuer = (extra: Record<string, string>) => {
        const env: NodeJS.ProcessEnv = { ...process.env, ABP_DATA_DIR: dir, ...extra };
        for (const k of ['HOST', 'PORT', 'SUPABASE_URL']) if (!(k in extra)) delete env[k];
        const out = execFileSync(process.execPath, ['--import', 'tsx', 'scripts/token.ts', '--email', 'eve@example.com'], { env, encoding: 'utf8' });
        return JSON.parse(Buffer.from(out.trim().split('.')[1]!, 'base64url').toString()).iss as string;
      };
      assert.equal(issuer({}), 'http://127.0.0.1:18080/auth/v1');
      assert.equal(issuer({ PORT: '9090' }), 'http://127.0.0.1:9090/auth/v1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stops admitting a token at its expiry, though it was admitted a moment before', async () => {
    const short = s.token('erin@example.com', { ttlSeconds: 5 });
    assert.equal((await s.call('GET', '/v1/orgs', { auth: short })).status, 200);
    const exp = JSON.parse(Buffer.from(short.split('.')[1]!, 'base64url').toString()).exp as number;
    await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 50));
    assert.equal((await s.call('GET', '/v1/orgs', { auth: short })).status, 401);
  });

  it('gives the same email the same user id every time', () => {
    assert.equal(s.userId('Alice@Example.com'), s.userId('alice@example.com'));
    assert.match(s.userId('alice@example.com'), /^[0-9a-f-]{36}$/);
  });
});

describe('organisations', () => {
  it('creates an organisation whose creator is the owner, and lists only the caller\'s organisations', async () => {
    const { orgId, token } = await newOrg(s, 'olivia@example.com');
    await newOrg(s, 'other@example.com');
    const mine = await s.call('GET', '/v1/orgs', { auth: token });
    assert.deepEqual(mine.body.items.map((o: { id: string }) => o.id), [orgId]);
    const members = await s.call('GET', `/v1/orgs/${orgId}/members`, { auth: token });
    assert.deepEqual(members.body.items.map((m: { email: string; role: string }) => [m.email, m.role]), [['olivia@example.com', 'owner']]);
  });

  it('rejects malformed input with a 400 naming each field', async () => {
    const r = await s.call('POST', '/v1/orgs', { auth: s.token('x@example.com'), body: { name: '', type: 'bank', plan: 'gold', extra: 1 } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'bad_request');
    const fields = r.body.error.details.map((d: { field: string }) => d.field).sort();
    assert.deepEqual(fields, ['extra', 'name', 'plan', 'type'].sort(), 'the unknown key named as itself');
    const nullBody = await s.call('POST', '/v1/orgs', { auth: s.token('x@example.com'), rawBody: 'null', headers: { 'content-type': 'application/json' } });
    assert.deepEqual([nullBody.status, nullBody.body.error.message], [400, 'The request body must be a JSON object, not null']);
    const notJson = await s.call('POST', '/v1/orgs', { auth: s.token('x@example.com'), rawBody: '{"name":', headers: { 'content-type': 'application/json' } });
    assert.equal(notJson.status, 400);
    assert.doesNotMatch(notJson.text, /at JSON\.parse|node_modules/, 'no stack trace');
    assert.equal(notJson.body.error.code, 'bad_request');
    assert.match(notJson.body.error.message, /^The request body is not valid JSON: /);
    assert.deepEqual(notJson.body.error.details.map((d: { field: string }) => d.field), ['(body)']);
    const encoded = await s.call('POST', '/v1/orgs', { auth: s.token('x@example.com'), rawBody: '{}', headers: { 'content-type': 'application/json', 'content-encoding': 'compress' } });
    assert.equal(encoded.status, 415);
    assert.equal(encoded.body.error.code, 'unsupported_media_type');
    assert.match(encoded.body.error.message, /compress/);
    // A path the framework's router cannot decode is the client's mistake too, not our 500.
    const undecodable = await s.call('GET', '/v1/orgs/%E0%A4%A', { auth: s.token('x@example.com') });
    assert.equal(undecodable.status, 400);
    assert.equal(undecodable.body.error.code, 'bad_request');
  });

  it('patches name and fallback URL and records the change in the audit log', async () => {
    const { orgId, token } = await newOrg(s, 'pat@example.com');
    const r = await s.call('PATCH', `/v1/orgs/${orgId}`, { auth: token, body: { name: 'Renamed', fallbackUrl: 'https://fallback.example.com/' } });
    assert.equal(r.status, 200);
    assert.equal(r.body.name, 'Renamed');
    assert.equal(r.body.fallbackUrl, 'https://fallback.example.com/');
    const log = await s.call('GET', `/v1/orgs/${orgId}/audit-log?action=org.update`, { auth: token });
    assert.equal(log.body.items.length, 1);
    assert.deepEqual(log.body.items[0].changes.name, { from: 'Org of pat@example.com', to: 'Renamed' });
    assert.equal(log.body.items[0].actor.email, 'pat@example.com');
    assert.equal((await s.call('PATCH', `/v1/orgs/${orgId}`, { auth: token, body: { fallbackUrl: 'javascript:alert(1)' } })).status, 400);
  });

  it('returns the first result when a create is retried with the same Idempotency-Key', async () => {
    const token = s.token('idem@example.com');
    const body = { name: 'Once', type: 'agency', plan: 'professional' };
    const a = await s.call('POST', '/v1/orgs', { auth: token, body, headers: { 'idempotency-key': 'k-1' } });
    const b = await s.call('POST', '/v1/orgs', { auth: token, body, headers: { 'idempotency-key': 'k-1' } });
    assert.equal(a.body.id, b.body.id);
    assert.equal((await s.call('GET', '/v1/orgs', { auth: token })).body.items.length, 1);
    const c1 = await s.call('POST', `/v1/orgs/${a.body.id}/campaigns`, { auth: token, body: campaignBody(), headers: { 'idempotency-key': 'c-1' } });
    const c2 = await s.call('POST', `/v1/orgs/${a.body.id}/campaigns`, { auth: token, body: campaignBody(), headers: { 'idempotency-key': 'c-1' } });
    assert.equal(c1.body.id, c2.body.id);
    assert.equal((await s.call('GET', `/v1/orgs/${a.body.id}/campaigns`, { auth: token })).body.items.length, 1);
    // A key stands for its request: another request with it is refused, not answered with the first result.
    const other = await s.call('POST', `/v1/orgs/${a.body.id}/campaigns`, { auth: token, body: campaignBody({ name: 'Another' }), headers: { 'idempotency-key': 'c-1' } });
    assert.equal(other.status, 409, other.text);
    assert.equal(other.body.error.details[0].field, 'Idempotency-Key');
    assert.equal((await s.call('POST', '/v1/orgs', { auth: token, body: { ...body, name: 'Twice' }, headers: { 'idempotency-key': 'k-1' } })).status, 409);
    assert.equal((await s.call('GET', '/v1/orgs', { auth: token })).body.items.length, 1);
    // A key is never cut short: two keys alike in their first 200 characters would otherwise be one.
    for (const bad of ['k'.repeat(201), 'two words']) {
      const r = await s.call('POST', `/v1/orgs/${a.body.id}/campaigns`, { auth: token, body: campaignBody({ name: 'Other' }), headers: { 'idempotency-key': bad } });
      assert.equal(r.status, 400, bad);
      assert.equal(r.body.error.details[0].field, 'Idempotency-Key');
    }
    assert.equal((await s.call('GET', `/v1/orgs/${a.body.id}/campaigns`, { auth: token })).body.items.length, 1);
    // Its creator, removed since, is not shown the organisation by a replay.
    assert.equal((await s.call('POST', `/v1/orgs/${a.body.id}/members`, { auth: token, body: { email: 'heir@example.com', role: 'owner' } })).status, 201);
    const removed = await s.call('DELETE', `/v1/orgs/${a.body.id}/members/${s.userId('idem@example.com')}`, { auth: s.token('heir@example.com') });
    assert.equal(removed.status, 200, removed.text);
    const replay = await s.call('POST', '/v1/orgs', { auth: token, body, headers: { 'idempotency-key': 'k-1' } });
    assert.equal(replay.status, 404, replay.text);
    assert.ok(!replay.text.includes('Once'), replay.text);
    const doc = (await s.call('GET', '/v1/openapi.json')).body;
    const header = (op: { parameters: { name: string }[] }) => op.parameters.some((p) => p.name === 'Idempotency-Key');
    assert.ok(header(doc.paths['/v1/orgs/{orgId}/campaigns'].post), 'documented where a retry is replayed');
    assert.ok(!header(doc.paths['/v1/orgs/{orgId}/postback-config/rotate'].post), 'and only there');
  });
});

describe('members and roles', () => {
  it('invites a colleague who can then act with their role', async () => {
    const { orgId, token } = await newOrg(s, 'owner1@example.com');
    const r = await s.call('POST', `/v1/orgs/${orgId}/members`, { auth: token, body: { email: 'Ana@Example.com', role: 'analyst' } });
    assert.equal(r.status, 201);
    assert.equal(r.body.userId, s.userId('ana@example.com'));
    const ana = s.token('ana@example.com');
    assert.equal((await s.call('GET', `/v1/orgs/${orgId}/campaigns`, { auth: ana })).status, 200);
    const denied = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: ana, body: campaignBody() });
    assert.equal(denied.status, 403);
    assert.match(denied.body.error.message, /analyst/);
    assert.equal((await s.call('POST', `/v1/orgs/${orgId}/members`, { auth: token, body: { email: 'ana@example.com', role: 'admin' } })).status, 409);
    const promoted = await s.call('PATCH', `/v1/orgs/${orgId}/members/${r.body.userId}`, { auth: token, body: { role: 'manager' } });
    assert.equal(promoted.body.role, 'manager');
    assert.equal((await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: ana, body: campaignBody() })).status, 201);
    assert.equal((await s.call('DELETE', `/v1/orgs/${orgId}/members/${r.body.userId}`, { auth: token })).status, 200);
    assert.equal((await s.call('GET', `/v1/orgs/${orgId}`, { auth: ana })).status, 404);
  });

  it('always keeps an owner, and admins cannot make or touch owners', async () => {
    const { orgId, token } = await newOrg(s, 'solo@example.com');
    const me = s.userId('solo@example.com');
    assert.equal((await s.call('PATCH', `/v1/orgs/${orgId}/members/${me}`, { auth: token, body: { role: 'admin' } })).status, 409);
    assert.equal((await s.call('DELETE', `/v1/orgs/${orgId}/members/${me}`, { auth: token })).status, 409);
    await s.call('POST', `/v1/orgs/${orgId}/members`, { auth: token, body: { email: 'adm@example.com', role: 'admin' } });
    const adm = s.token('adm@example.com');
    assert.equal((await s.call('POST', `/v1/orgs/${orgId}/members`, { auth: adm, body: { email: 'o2@example.com', role: 'owner' } })).status, 403);
    assert.equal((await s.call('DELETE', `/v1/orgs/${orgId}/members/${me}`, { auth: adm })).status, 403);
    // With a second owner, the first may step down.
    await s.call('POST', `/v1/orgs/${orgId}/members`, { auth: token, body: { email: 'o2@example.com', role: 'owner' } });
    assert.equal((await s.call('PATCH', `/v1/orgs/${orgId}/members/${me}`, { auth: token, body: { role: 'admin' } })).status, 200);
  });
});

describe('API keys', () => {
  it('shows the key once, authenticates with it, and stops it at once when revoked', async () => {
    const { orgId, token } = await newOrg(s, 'keys@example.com');
    const created = await s.call('POST', `/v1/orgs/${orgId}/api-keys`, { auth: token, body: { name: 'ci', role: 'manager' } });
    assert.equal(created.status, 201);
    const key: string = created.body.key;
    assert.match(key, /^abp_live_/);
    const list = await s.call('GET', `/v1/orgs/${orgId}/api-keys`, { auth: token });
    assert.equal(list.body.items.length, 1);
    assert.ok(!list.text.includes(key), 'the key is never listed');
    assert.equal(list.body.items[0].prefix, key.slice(0, list.body.items[0].prefix.length));
    const made = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: key, body: campaignBody() });
    assert.equal(made.status, 201);
    assert.deepEqual((await s.call('GET', '/v1/orgs', { auth: key })).body.items.map((o: { id: string }) => o.id), [orgId]);
    const log = await s.call('GET', `/v1/orgs/${orgId}/audit-log?targetId=${made.body.id}`, { auth: token });
    assert.deepEqual(log.body.items[0].actor, { type: 'apiKey', id: created.body.id });
    assert.equal((await s.call('POST', `/v1/orgs/${orgId}/api-keys`, { auth: key, body: { name: 'x', role: 'admin' } })).status, 403);
    assert.equal((await s.call('DELETE', `/v1/orgs/${orgId}/api-keys/${created.body.id}`, { auth: token })).status, 200);
    assert.equal((await s.call('GET', `/v1/orgs/${orgId}/campaigns`, { auth: key })).status, 401);
  });

  it('creates one key per Idempotency-Key: the retry names that key with 409 and never shows or stores its secret', async () => {
    const { orgId, token } = await newOrg(s, 'keys-idem@example.com');
    const create = (auth: string, name = 'ci') => s.call('POST', `/v1/orgs/${orgId}/api-keys`, { auth, body: { name, role: 'admin' }, headers: { 'idempotency-key': 'key-1' } });
    const first = await create(token);
    assert.equal(first.status, 201, first.text);
    const secret: string = first.body.key;
    const retry = await create(token);
    assert.equal(retry.status, 409, retry.text);
    assert.equal(retry.body.error.code, 'conflict');
    assert.match(retry.body.error.message, new RegExp(`API key ${first.body.id} was already created.*revoke it \\(DELETE /v1/orgs/${orgId}/api-keys/${first.body.id}\\)`));
    assert.deepEqual(retry.body.error.details, [{ field: 'Idempotency-Key', message: `already used to create API key ${first.body.id}` }]);
    assert.ok(!retry.text.includes(secret), 'the secret is shown once');
    const list = await s.call('GET', `/v1/orgs/${orgId}/api-keys`, { auth: token });
    assert.deepEqual(list.body.items.map((k: { id: string; name: string }) => [k.id, k.name]), [[first.body.id, 'ci']], 'one key');
    // Only the hash is kept: not in the key, its index, the Idempotency-Key record nor the audit log.
    const { firestore } = await import('../functions/adapters/firestore');
    const orgRef = firestore().collection(collections.orgs).doc(orgId);
    const stored = await Promise.all([collections.apiKeys, collections.idempotencyKeys, collections.auditLog].map((c) => orgRef.collection(c).get()));
    const index = await firestore().collection(collections.apiKeyIndex).where('orgId', '==', orgId).get();
    const docs = [...stored.flatMap((q) => q.docs), ...index.docs].map((d) => JSON.stringify(d.data()));
    assert.ok(docs.some((d) => d.includes(first.body.id)) && docs.every((d) => !d.includes(secret)), 'the secret is stored nowhere');
    // Another caller's same key is its own; after revoking, the retry says so and still makes nothing.
    assert.equal((await s.call('POST', `/v1/orgs/${orgId}/members`, { auth: token, body: { email: 'keys-idem-2@example.com', role: 'admin' } })).status, 201);
    assert.equal((await create(s.token('keys-idem-2@example.com'), 'theirs')).status, 201);
    assert.equal((await s.call('DELETE', `/v1/orgs/${orgId}/api-keys/${first.body.id}`, { auth: token })).status, 200);
    assert.match((await create(token)).body.error.message, /has since been revoked/);
    assert.equal((await s.call('GET', `/v1/orgs/${orgId}/api-keys`, { auth: token })).body.items.length, 2);
    const op = (await s.call('GET', '/v1/openapi.json')).body.paths['/v1/orgs/{orgId}/api-keys'].post;
    assert.ok(op.parameters.some((p: { name: string }) => p.name === 'Idempotency-Key'));
    assert.match(op.summary, /409/);
  });

  it("revokes a member's keys with the member, those beyond a demoted member's role, and keys made with a revoked key", async () => {
    const { orgId, token } = await newOrg(s, 'keys-follow@example.com');
    const keys = (auth: string) => s.call('GET', `/v1/orgs/${orgId}/api-keys?limit=100`, { auth });
    const make = async (auth: string, name: string, role: string) => {
      const r = await s.call('POST', `/v1/orgs/${orgId}/api-keys`, { auth, body: { name, role } });
      assert.equal(r.status, 201, r.text);
      return r.body as { id: string; key: string };
    };
    const works = async (key: string) => (await s.call('GET', `/v1/orgs/${orgId}/campaigns`, { auth: key })).status === 200;
    for (const email of ['ada@example.com', 'bo@example.com']) assert.equal((await s.call('POST', `/v1/orgs/${orgId}/members`, { auth: token, body: { email, role: 'admin' } })).status, 201);
    const [ada, bo] = [s.token('ada@example.com'), s.token('bo@example.com')];
    const adaAdmin = await make(ada, 'ada admin', 'admin');
    const adaAnalyst = await make(ada, 'ada analyst', 'analyst');
    const madeByKey = await make(adaAdmin.key, 'made with ada admin key', 'manager');
    const boAdmin = await make(bo, 'bo admin', 'admin');
    const boManager = await make(bo, 'bo manager', 'manager');
    const madeByBoKey = await make(boAdmin.key, 'made with bo admin key', 'analyst');

    // Removed, Ada cannot come back through a key she made: every key of hers, and the key made with one, stops.
    assert.equal((await s.call('DELETE', `/v1/orgs/${orgId}/members/${s.userId('ada@example.com')}`, { auth: token })).status, 200);
    for (const k of [adaAdmin, adaAnalyst, madeByKey]) assert.equal(await works(k.key), false, `${k.id} stops with its maker`);
    assert.equal((await s.call('POST', `/v1/orgs/${orgId}/members`, { auth: adaAdmin.key, body: { email: 'ada@example.com', role: 'admin' } })).status, 401);

    // Demoted to manager, Bo may grant nothing: his keys stop; others' keys are untouched.
    const other = await make(token, 'owner key', 'admin');
    assert.equal((await s.call('PATCH', `/v1/orgs/${orgId}/members/${s.userId('bo@example.com')}`, { auth: token, body: { role: 'manager' } })).status, 200);
    for (const k of [boAdmin, boManager, madeByBoKey]) assert.equal(await works(k.key), false, `${k.id} stops with its maker's demotion`);
    assert.equal(await works(other.key), true);

    // A key revoked takes the keys made with it.
    const child = await make(other.key, 'made with owner key', 'analyst');
    assert.equal((await s.call('DELETE', `/v1/orgs/${orgId}/api-keys/${other.id}`, { auth: token })).status, 200);
    assert.equal(await works(child.key), false);
    const listed = (await keys(token)).body.items as { id: string; revokedAt: string | null }[];
    assert.deepEqual(listed.filter((k) => !k.revokedAt).map((k) => k.id), [], 'all revoked, and listed as such');
    const log = await s.call('GET', `/v1/orgs/${orgId}/audit-log?targetId=${madeByKey.id}`, { auth: token });
    assert.deepEqual(log.body.items.map((e: { action: string; changes: { reason?: string } }) => [e.action, e.changes.reason]), [
      ['api_key.revoke', 'made by ada@example.com, removed from the organisation'],
      ['api_key.create', undefined],
    ]);
  });

  it('keeps the keys a demoted member could still make', async () => {
    const { orgId, token } = await newOrg(s, 'keys-demote@example.com');
    assert.equal((await s.call('POST', `/v1/orgs/${orgId}/members`, { auth: token, body: { email: 'heir2@example.com', role: 'owner' } })).status, 201);
    const adminKey = await s.call('POST', `/v1/orgs/${orgId}/api-keys`, { auth: token, body: { name: 'a', role: 'admin' } });
    assert.equal(adminKey.status, 201, adminKey.text);
    // Owner to admin: an admin may still make admin keys, so this one stays.
    assert.equal((await s.call('PATCH', `/v1/orgs/${orgId}/members/${s.userId('keys-demote@example.com')}`, { auth: s.token('heir2@example.com'), body: { role: 'admin' } })).status, 200);
    assert.equal((await s.call('GET', `/v1/orgs/${orgId}/campaigns`, { auth: adminKey.body.key })).status, 200);
  });
});

describe('campaigns', () => {
  it('creates with documented defaults and validates URLs, macros, money and tiers', async () => {
    const { orgId, token } = await newOrg(s, 'camp@example.com');
    const r = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: { name: 'Min', destinationUrl: 'https://a.example.com/?c={click_id}', payout: { type: 'revshare', percent: 30 }, revenue: { type: 'cps', percent: 40 } } });
    assert.equal(r.status, 201);
    assert.equal(r.body.status, 'draft');
    assert.equal(r.body.currency, 'USD');
    assert.equal(r.body.attributionWindowDays, 30);
    assert.equal(r.body.holdDays, 30);
    const bad = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, {
      auth: token,
      body: campaignBody({ destinationUrl: 'javascript:alert(1)//{nope}', currency: 'XYZ', payout: { type: 'cpa', amount: 4.5 } }),
    });
    assert.equal(bad.status, 400);
    const fields = bad.body.error.details.map((d: { field: string }) => d.field);
    for (const f of ['destinationUrl', 'currency', 'payout.amount']) assert.ok(fields.includes(f), `${f} in ${fields}`);
    // A commission past what one sale may be (10^13 minor units) would let a report's sums pass 2^53; a monthly
    // payout cap is a sum, and may be larger.
    const huge = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody({ payout: { type: 'cpa', amount: 1e13 + 1 } }) });
    assert.deepEqual(huge.body.error?.details, [{ field: 'payout.amount', message: 'must be at most 10000000000000 minor units' }]);
    const bigCap = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody({ caps: { monthly: { payout: 1e14 } } }) });
    assert.equal(bigCap.status, 201, bigCap.text);
    const tiers = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody({ payout: { type: 'cpa', amount: 500, tiers: [{ minConversions: 10, amount: 600 }, { minConversions: 5, amount: 700 }] } }) });
    assert.deepEqual(tiers.body.error.details.map((d: { field: string }) => d.field), ['payout.tiers']);
    for (const destinationUrl of ['https://{sub1}/x', 'https:///{sub1}']) {
      const hostMacro = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody({ destinationUrl }) });
      assert.equal(hostMacro.status, 400, destinationUrl);
      assert.deepEqual(hostMacro.body.error.details.map((d: { field: string }) => d.field), ['destinationUrl']);
    }
    const queryOnly = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody({ name: 'Query only', destinationUrl: 'https://shop.example.com?aff={click_id}' }) });
    assert.equal(queryOnly.status, 201, queryOnly.text);
    assert.equal((await s.call('PATCH', `/v1/orgs/${orgId}/campaigns/${queryOnly.body.id}`, { auth: token, body: { status: 'archived' } })).status, 200);
  });

  it('holds the Starter plan to 5 campaigns that are not archived', async () => {
    const { orgId, token } = await newOrg(s, 'starter@example.com');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody({ name: `c${i}` }) })).body.id);
    const sixth = await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody({ name: 'c5' }) });
    assert.equal(sixth.status, 409);
    assert.match(sixth.body.error.message, /starter plan allows 5 campaigns/);
    const archived = await s.call('DELETE', `/v1/orgs/${orgId}/campaigns/${ids[0]}`, { auth: token });
    assert.equal(archived.body.status, 'archived');
    assert.equal((await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody({ name: 'c6' }) })).status, 201);
    assert.equal((await s.call('PATCH', `/v1/orgs/${orgId}/campaigns/${ids[0]}`, { auth: token, body: { status: 'active' } })).status, 409, 'un-archiving counts too');
  });

  it('pages newest first with a cursor and filters by status', async () => {
    const { orgId, token } = await newOrg(s, 'pages@example.com', 'professional');
    const made: string[] = [];
    for (let i = 0; i < 5; i++) made.push((await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody({ name: `p${i}`, status: i % 2 ? 'paused' : 'active' }) })).body.id);
    const p1 = await s.call('GET', `/v1/orgs/${orgId}/campaigns?limit=2`, { auth: token });
    const p2 = await s.call('GET', `/v1/orgs/${orgId}/campaigns?limit=2&cursor=${p1.body.nextCursor}`, { auth: token });
    const p3 = await s.call('GET', `/v1/orgs/${orgId}/campaigns?limit=2&cursor=${p2.body.nextCursor}`, { auth: token });
    assert.deepEqual([...p1.body.items, ...p2.body.items, ...p3.body.items].map((c: { id: string }) => c.id), [...made].reverse());
    assert.equal(p3.body.nextCursor, null);
    const paused = await s.call('GET', `/v1/orgs/${orgId}/campaigns?status=paused`, { auth: token });
    assert.deepEqual(paused.body.items.map((c: { name: string }) => c.name), ['p3', 'p1']);
    assert.equal((await s.call('GET', `/v1/orgs/${orgId}/campaigns?limit=0`, { auth: token })).status, 400);
  });
});

describe('affiliates, links and postback config', () => {
  it('creates affiliates and links whose URL is the tracking URL', async () => {
    const { orgId, token } = await newOrg(s, 'aff@example.com');
    const campaign = (await s.call('POST', `/v1/orgs/${orgId}/campaigns`, { auth: token, body: campaignBody() })).body;
    const aff = await s.call('POST', `/v1/orgs/${orgId}/affiliates`, { auth: token, body: { name: 'Pat Publisher', email: 'pat@pub.example', payoutOverrides: { [campaign.id]: { type: 'cpa', amount: 700 } } } });
    assert.equal(aff.status, 201);
    assert.equal(aff.body.minimumPayout, 5000);
    const badOverride = await s.call('POST', `/v1/orgs/${orgId}/affiliates`, { auth: token, body: { name: 'X', email: 'x@pub.example', payoutOverrides: { cmp_nope: { type: 'cpa', amount: 1 } }, userIds: ['ghost'] } });
    assert.equal(badOverride.status, 400);
    assert.deepEqual(badOverride.body.error.details.map((d: { field: string }) => d.field), ['payoutOverrides.cmp_nope', 'userIds.0']);
    const patched = await s.call('PATCH', `/v1/orgs/${orgId}/affiliates/${aff.body.id}`, { auth: token, body: { status: 'paused', minimumPayout: 10000 } });
    assert.equal(patched.body.status, 'paused');
    const link = await s.call('POST', `/v1/orgs/${orgId}/links`, { auth: token, body: { campaignId: campaign.id, affiliateId: aff.body.id } });
    assert.equal(link.status, 201);
    assert.equal(link.body.url, `${s.baseUrl}/c/${link.body.id}`);
    const unknown = await s.call('POST', `/v1/orgs/${orgId}/links`, { auth: token, body: { campaignId: 'cmp_nope', affiliateId: aff.body.id } });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.error.details[0].field, 'campaignId');
    await s.call('DELETE', `/v1/orgs/${orgId}/campaigns/${campaign.id}`, { auth: token });
    assert.equal((await s.call('POST', `/v1/orgs/${orgId}/links`, { auth: token, body: { campaignId: campaign.id, affiliateId: aff.body.id } })).status, 409);
    const listed = await s.call('GET', `/v1/orgs/${orgId}/links?campaignId=${campaign.id}`, { auth: token });
    assert.deepEqual(listed.body.items.map((l: { id: string }) => l.id), [link.body.id]);
  });

  it('serves a postback template and rotates the token', async () => {
    const { orgId, token } = await newOrg(s, 'pb@example.com');
    const a = await s.call('GET', `/v1/orgs/${orgId}/postback-config`, { auth: token });
    assert.match(a.body.token, /^pbt_/);
    assert.ok(a.body.postbackUrl.startsWith(`${s.baseUrl}/postback?token=${a.body.token}&click_id={click_id}`));
    const b = await s.call('POST', `/v1/orgs/${orgId}/postback-config/rotate`, { auth: token });
    assert.notEqual(b.body.token, a.body.token);
    assert.equal((await s.call('GET', `/v1/orgs/${orgId}/postback-config`, { auth: token })).body.token, b.body.token);
    assert.ok(!(await s.call('GET', `/v1/orgs/${orgId}`, { auth: token })).text.includes(b.body.token), 'the org resource does not leak the token');
  });
});

describe('meta', () => {
  it('answers /v1 itself from the API, which says where its routes are', async () => {
    // The gateway once answered it with its own 404, which said the API is under /v1.
    const r = await s.call('GET', '/v1', { auth: s.token('x@example.com') });
    assert.deepEqual([r.status, r.body.error.message], [404, 'No route /v1: GET /v1/openapi.json lists every route']);
  });

  it('serves an OpenAPI 3.1 document covering every route, from the validation schemas', async () => {
    const r = await s.call('GET', '/v1/openapi.json');
    assert.equal(r.status, 200);
    assert.equal(r.body.openapi, '3.1.0');
    const post = r.body.paths['/v1/orgs/{orgId}/campaigns'].post;
    assert.equal(post.requestBody.content['application/json'].schema.$ref, '#/components/schemas/CreateCampaign');
    assert.equal(post.requestBody.required, true);
    // Onboarding may be asked for without a body (its URLs have defaults); a payout run may not.
    const onboarding = r.body.paths['/v1/orgs/{orgId}/affiliates/{id}/stripe/onboarding'].post;
    assert.equal(onboarding.requestBody.required, false);
    // Who may: what its own check asks (an analyst is refused), not the read permission that lets affiliates in.
    assert.deepEqual([onboarding['x-permission'], onboarding['x-permission-note']], ['affiliates:write', 'Or an affiliate user acting for this affiliate (onboarding itself)']);
    assert.equal(post['x-permission'], 'campaigns:write');
    assert.equal(r.body.paths['/v1/orgs/{orgId}/payout-runs'].post.requestBody.required, true);
    assert.deepEqual(r.body.components.schemas.CreateCampaign.required.sort(), ['destinationUrl', 'name', 'payout', 'revenue']);
    assert.ok(!JSON.stringify(r.body).includes('#/$defs/'), 'every reference resolves to a component');
    assert.ok(r.body.paths['/v1/orgs/{orgId}/members/{userId}'].patch);
    assert.ok(r.body.paths['/v1/orgs/{orgId}/audit-log'].get);
    // The numbers routes describe what they answer too.
    const answer = (path: string) => r.body.paths[path].get.responses['200'].content?.['application/json']?.schema;
    for (const path of ['/v1/orgs/{orgId}/reports', '/v1/orgs/{orgId}/stats', '/v1/orgs/{orgId}/affiliates/{id}/balance']) assert.ok(answer(path), `${path} has a response schema`);
    assert.ok(r.body.components.schemas.Metrics.required.includes('payout'));
  });

  it('answers unknown routes and methods with JSON errors', async () => {
    const unknown = await s.call('GET', '/v1/nope');
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.error.message, /GET \/v1\/openapi\.json lists every route/);
    const r = await s.call('PUT', '/v1/orgs', { auth: s.token('m@example.com') });
    assert.equal(r.status, 405);
    assert.equal(r.body.error.code, 'method_not_allowed');
  });
});
