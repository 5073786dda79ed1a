import assert from 'node:assert/strict';
import { createPrivateKey, sign, type JsonWebKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { PayoutProviderError, setPayoutProviderForTests, type PayoutProvider, type TransferFailureReason } from '../functions/adapters/payouts';
import { campaignBody, newOrg, startTestStack, type Reply, type TestStack } from './helpers/stack';

/**
 * Inputs a client controls (ids, cursors, dates, Idempotency-Keys, the claims of a token) and upstream refusals
 * must each get a 4xx naming what was wrong, or a 502/503 saying whose move it is, never a 500 nor another
 * caller's data.
 */
let s: TestStack;
const O = { orgId: '', owner: '', campaign: '', affX: '', affY: '', affZ: '', xUser: '' };

before(async () => {
  s = await startTestStack();
  const o = await newOrg(s, 'owner@safety.example', 'professional');
  O.orgId = o.orgId;
  O.owner = o.token;
  const post = async (path: string, body: unknown) => (await s.call('POST', `/v1/orgs/${O.orgId}${path}`, { auth: O.owner, body })).body;
  O.campaign = (await post('/campaigns', campaignBody())).id;
  await post('/members', { email: 'xena@safety.example', role: 'affiliate' });
  const xena = s.userId('xena@safety.example');
  O.affX = (await post('/affiliates', { name: 'X', email: 'x@safety.example', userIds: [xena] })).id;
  O.affY = (await post('/affiliates', { name: 'Y', email: 'y@safety.example' })).id;
  O.affZ = (await post('/affiliates', { name: 'Z', email: 'z@safety.example', userIds: [xena] })).id;
  O.xUser = s.token('xena@safety.example');
});
after(() => s.close());

const orgPath = (p: string) => `/v1/orgs/${O.orgId}${p}`;

function assertClientError(r: Reply, status: number, field: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(typeof r.body?.error?.message, 'string', r.text);
  assert.ok(r.body.error.details.some((d: { field: string }) => d.field === field), `${field} named in ${r.text}`);
}

describe('Idempotency-Key replays', () => {
  it("never hand one caller the link another caller made under the same key", async () => {
    const headers = { 'idempotency-key': 'shared-key-1' };
    const forY = await s.call('POST', orgPath('/links'), { auth: O.owner, body: { campaignId: O.campaign, affiliateId: O.affY }, headers });
    assert.equal(forY.status, 201);
    const forX = await s.call('POST', orgPath('/links'), { auth: O.xUser, body: { campaignId: O.campaign, affiliateId: O.affX }, headers });
    assert.equal(forX.status, 201, forX.text);
    assert.equal(forX.body.affiliateId, O.affX);
    assert.notEqual(forX.body.id, forY.body.id);
    const again = await s.call('POST', orgPath('/links'), { auth: O.xUser, body: { campaignId: O.campaign, affiliateId: O.affX }, headers });
    assert.equal(again.body.id, forX.body.id, 'the same caller still gets its first result back');
  });

  it('never replay a record the caller can no longer see', async () => {
    const headers = { 'idempotency-key': 'shared-key-2' };
    const first = await s.call('POST', orgPath('/links'), { auth: O.xUser, body: { campaignId: O.campaign, affiliateId: O.affX }, headers });
    assert.equal(first.status, 201);
    const unlinked = await s.call('PATCH', orgPath(`/affiliates/${O.affX}`), { auth: O.owner, body: { userIds: [] } });
    assert.equal(unlinked.status, 200);
    const replay = await s.call('POST', orgPath('/links'), { auth: O.xUser, body: { campaignId: O.campaign, affiliateId: O.affZ }, headers });
    assert.equal(replay.status, 201, replay.text);
    assert.equal(replay.body.affiliateId, O.affZ, 'a new link for the affiliate it may act for, not the hidden one');
    assert.notEqual(replay.body.id, first.body.id);
    await s.call('PATCH', orgPath(`/affiliates/${O.affX}`), { auth: O.owner, body: { userIds: [s.userId('xena@safety.example')] } });
  });
});

describe('list cursors', () => {
  const crafted = [['x', { a: 1 }], [1, 2], ['x', 'a/b'], ['x', null], [{}, 'cnv_x']];
  for (const value of crafted) {
    it(`answers 400 to the crafted cursor ${JSON.stringify(value)}`, async () => {
      const cursor = Buffer.from(JSON.stringify(value)).toString('base64url');
      for (const path of ['/conversions', '/payouts', '/payout-runs', `/affiliates/${O.affY}/ledger`]) {
        assertClientError(await s.call('GET', orgPath(`${path}?cursor=${cursor}`), { auth: O.owner }), 400, 'cursor');
      }
    });
  }
});

describe('ids that are not document ids', () => {
  it('answers 404 to path ids with a slash, on reads and writes', async () => {
    const slash = 'a%2Fb';
    const calls: [string, string, unknown][] = [
      ['PATCH', `/affiliates/${slash}`, { status: 'paused' }],
      ['PATCH', `/campaigns/${slash}`, { status: 'paused' }],
      ['DELETE', `/campaigns/${slash}`, undefined],
      ['PATCH', `/members/${slash}`, { role: 'analyst' }],
      ['DELETE', `/api-keys/${slash}`, undefined],
      ['GET', `/affiliates/${slash}/balance`, undefined],
      ['POST', `/affiliates/${slash}/stripe/onboarding`, undefined],
      ['PATCH', `/conversions/${slash}`, { status: 'approved' }],
      ['GET', `/payout-runs/${slash}`, undefined],
      ['PATCH', '/affiliates/__reserved__', { status: 'paused' }],
    ];
    for (const [method, path, body] of calls) {
      const r = await s.call(method, orgPath(path), { auth: O.owner, body });
      assert.equal(r.status, 404, `${method} ${path}: ${r.text}`);
      assert.equal(r.body.error.code, 'not_found');
    }
  });

  it('answers 400 to a path with a malformed % escape', async () => {
    const r = await s.call('GET', orgPath('/campaigns/%ZZ'), { auth: O.owner });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error.code, 'bad_request');
  });

  it('answers 400 naming the field to body ids with a slash', async () => {
    assertClientError(await s.call('POST', orgPath('/links'), { auth: O.owner, body: { campaignId: 'a/b', affiliateId: O.affY } }), 400, 'campaignId');
    assertClientError(await s.call('POST', orgPath('/links'), { auth: O.owner, body: { campaignId: O.campaign, affiliateId: 'a/b' } }), 400, 'affiliateId');
    const overrides = await s.call('POST', orgPath('/affiliates'), { auth: O.owner, body: { name: 'Q', email: 'q@safety.example', payoutOverrides: { 'a/b': { type: 'cpa', amount: 1 } } } });
    assert.equal(overrides.status, 400, overrides.text);
    assert.ok(overrides.body.error.details.some((d: { field: string }) => d.field.startsWith('payoutOverrides')), overrides.text);
    assertClientError(await s.call('PATCH', orgPath(`/affiliates/${O.affY}`), { auth: O.owner, body: { userIds: ['a/b'] } }), 400, 'userIds.0');
  });
});

describe('live stats dates', () => {
  it('answers 400 to impossible dates and to a range longer than reports allow', async () => {
    assertClientError(await s.call('GET', orgPath('/stats?from=2024-13-99&to=2024-12-31'), { auth: O.owner }), 400, 'from');
    assertClientError(await s.call('GET', orgPath('/stats?from=2024-02-01&to=2024-02-30'), { auth: O.owner }), 400, 'to');
    assertClientError(await s.call('GET', orgPath('/stats?from=2020-01-01&to=2024-01-01'), { auth: O.owner }), 400, 'to');
    assertClientError(await s.call('GET', orgPath('/stats?from=2024-02-02&to=2024-02-01'), { auth: O.owner }), 400, 'to'); // the same rule and wording as reports: to must be on or after from
    // Before any tracking data (and before BigQuery's first DATE, once the report looks a day back).
    assertClientError(await s.call('GET', orgPath('/reports?from=0000-01-01&to=0000-01-02'), { auth: O.owner }), 400, 'from');
    // And after the last day a report can look one day past (9999-12-31 + 1 is no longer written YYYY-MM-DD).
    assertClientError(await s.call('GET', orgPath('/reports?from=9999-12-31&to=9999-12-31&groupBy=sub1'), { auth: O.owner }), 400, 'to');
    const year = await s.call('GET', orgPath('/stats?from=2024-01-01&to=2024-12-31'), { auth: O.owner });
    assert.equal(year.status, 200, year.text);
  });

  it('answers 400 to impossible dates and a reversed range in the conversion list too', async () => {
    assertClientError(await s.call('GET', orgPath('/conversions?from=2024-13-45'), { auth: O.owner }), 400, 'from');
    assertClientError(await s.call('GET', orgPath('/conversions?to=2024-02-30T10:00:00Z'), { auth: O.owner }), 400, 'to');
    assertClientError(await s.call('GET', orgPath('/conversions?from=2024-02-02&to=2024-02-01T23:00Z'), { auth: O.owner }), 400, 'to');
    assert.equal((await s.call('GET', orgPath('/conversions?from=2024-02-01T23:00Z&to=2024-02-01'), { auth: O.owner })).status, 200);
  });
});

describe('Stripe onboarding refusals', () => {
  afterEach(() => setPayoutProviderForTests(undefined));

  function refusing(reason: TransferFailureReason, retryable: boolean): PayoutProvider {
    const refuse = async (): Promise<never> => {
      throw new PayoutProviderError(reason, `stand-in refusal: ${reason}`, retryable);
    };
    return { kind: 'stripe', createConnectedAccount: refuse, createOnboardingLink: refuse, getAccount: refuse, transfer: refuse, findTransfer: refuse };
  }

  const cases: [TransferFailureReason, boolean, number][] = [
    ['account_invalid', false, 409],
    ['rate_limited', true, 503],
    ['indeterminate', true, 503],
    ['auth_failed', false, 502],
    ['stripe_error', false, 502],
  ];
  for (const [reason, retryable, status] of cases) {
    it(`answers ${status} when the provider refuses with ${reason}`, async () => {
      setPayoutProviderForTests(refusing(reason, retryable));
      const r = await s.call('POST', orgPath(`/affiliates/${O.affY}/stripe/onboarding`), { auth: O.owner });
      assert.equal(r.status, status, r.text);
      assert.equal(r.body.error.code, { 409: 'conflict', 502: 'bad_gateway', 503: 'unavailable' }[status]);
      assert.match(r.body.error.message, /Stripe/);
    });
  }
});

describe('access token claims', () => {
  /** Signs claims with the local stack's key, as Supabase would sign them. */
  function tokenWith(claims: Record<string, unknown>): string {
    const { kid, privateJwk } = JSON.parse(readFileSync(join(process.env.ABP_DATA_DIR!, 'dev-auth-key.json'), 'utf8')) as { kid: string; privateJwk: JsonWebKey };
    const now = Math.floor(Date.now() / 1000);
    const payload = { iss: `${s.baseUrl}/auth/v1`, aud: 'authenticated', sub: s.userId('claims@safety.example'), email: 'claims@safety.example', role: 'authenticated', iat: now, exp: now + 600, ...claims };
    const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const input = `${enc({ alg: 'ES256', typ: 'JWT', kid })}.${enc(payload)}`;
    const signature = sign('sha256', Buffer.from(input), { key: createPrivateKey({ key: privateJwk, format: 'jwk' }), dsaEncoding: 'ieee-p1363' });
    return `${input}.${signature.toString('base64url')}`;
  }

  it('admits a signed-in user with an email', async () => {
    assert.equal((await s.call('GET', '/v1/orgs', { auth: tokenWith({}) })).status, 200);
  });

  for (const [what, claims] of [
    ['an empty email', { email: '' }],
    ['a blank email', { email: '  ' }],
    ['no email', { email: undefined }],
    ['the anon role', { role: 'anon' }],
    ['the service_role role', { role: 'service_role' }],
    ['an anonymous sign-in', { is_anonymous: true }],
    // The user id keys memberships: one that is no document id (a path, reserved names) is no user of ours.
    ['a user id with a slash', { sub: 'orgs/x' }],
    ['a reserved user id', { sub: '__name__' }],
  ] as const) {
    it(`answers 401 to a token with ${what}`, async () => {
      const r = await s.call('GET', '/v1/orgs', { auth: tokenWith(claims) });
      assert.equal(r.status, 401, r.text);
      assert.equal(r.body.error.code, 'unauthorized');
    });
  }
});

describe('oversized and reserved values', () => {
  it('answers 400 naming the field, never a Firestore error, for ids, cursors, emails and lists past their limits', async () => {
    const long = 'x'.repeat(7000);
    assertClientError(await s.call('GET', orgPath(`/links?campaignId=${long}`), { auth: O.owner }), 400, 'campaignId');
    assertClientError(await s.call('GET', orgPath(`/conversions?affiliateId=${long}`), { auth: O.owner }), 400, 'affiliateId');
    assertClientError(await s.call('GET', orgPath(`/audit-log?action=${long}`), { auth: O.owner }), 400, 'action');
    assertClientError(await s.call('GET', orgPath('/payouts?status=whatever'), { auth: O.owner }), 400, 'status');
    assertClientError(await s.call('GET', orgPath('/campaigns?cursor=__x__'), { auth: O.owner }), 400, 'cursor');
    assertClientError(await s.call('POST', orgPath('/members'), { auth: O.owner, body: { email: `${'a'.repeat(3000)}@safety.example`, role: 'analyst' } }), 400, 'email');
    const devices = await s.call('POST', orgPath('/campaigns'), { auth: O.owner, body: campaignBody({ name: 'Many devices', targeting: { devices: Array(1000).fill('desktop') } }) });
    assert.equal(devices.status, 400, devices.text);
    assert.ok(devices.body.error.details.some((d: { field: string }) => d.field.startsWith('targeting.devices')), devices.text);
    // A URL past 2048 characters would grow the organisation's document and its audit record past Firestore's limit.
    assertClientError(await s.call('PATCH', orgPath(''), { auth: O.owner, body: { fallbackUrl: `https://a.example/${'a'.repeat(1_100_000)}` } }), 400, 'fallbackUrl');
    const sortCursor = Buffer.from(JSON.stringify([long, 'cnv_x'])).toString('base64url');
    for (const path of ['/payouts', '/payout-runs', `/affiliates/${O.affY}/ledger`]) assertClientError(await s.call('GET', orgPath(`${path}?cursor=${sortCursor}`), { auth: O.owner }), 400, 'cursor');
  });

  it('refuses a payout run asked for without a body, rather than take it for a real one', async () => {
    const r = await s.call('POST', orgPath('/payout-runs'), { auth: O.owner });
    assertClientError(r, 400, '(body)');
    assert.deepEqual((await s.call('GET', orgPath('/payout-runs'), { auth: O.owner })).body.items, []);
  });
});

describe('edits that would change what is already out', () => {
  it("refuses a campaign's new currency once it has links, a link for a blocked affiliate, and a plan its campaigns do not fit", async () => {
    const post = (path: string, body: unknown) => s.call('POST', orgPath(path), { auth: O.owner, body });
    const unlinked = (await post('/campaigns', campaignBody({ name: 'No links yet' }))).body.id as string;
    assert.equal((await s.call('PATCH', orgPath(`/campaigns/${unlinked}`), { auth: O.owner, body: { currency: 'EUR' } })).status, 200, 'nothing out yet');
    const linked = await s.call('PATCH', orgPath(`/campaigns/${O.campaign}`), { auth: O.owner, body: { currency: 'JPY' } });
    assert.equal(linked.status, 409, linked.text); // O.campaign has links from the Idempotency-Key tests
    assert.match(linked.body.error.message, /currency cannot change once it has links/);
    // Nor while an affiliate's fixed payout for it is in its currency; a percentage is in none.
    const patchCampaign = (body: unknown) => s.call('PATCH', orgPath(`/campaigns/${unlinked}`), { auth: O.owner, body });
    const overriding = (await post('/affiliates', { name: 'O', email: 'o@safety.example', payoutOverrides: { [unlinked]: { type: 'cpa', amount: 500000 } } })).body.id as string;
    const overridden = await patchCampaign({ currency: 'JPY' });
    assert.equal(overridden.status, 409, overridden.text);
    assert.match(overridden.body.error.message, new RegExp(`fixed payout override for it \\(affiliate ${overriding}\\)`));
    const revshare = await s.call('PATCH', orgPath(`/affiliates/${overriding}`), { auth: O.owner, body: { payoutOverrides: { [unlinked]: { type: 'revshare', percent: 10 } } } });
    assert.equal(revshare.status, 200, revshare.text);
    assert.equal((await patchCampaign({ currency: 'JPY' })).status, 200);

    const blocked = (await post('/affiliates', { name: 'B', email: 'b@safety.example', status: 'blocked' })).body.id as string;
    const link = await post('/links', { campaignId: O.campaign, affiliateId: blocked });
    assert.equal(link.status, 409, link.text);

    // Professional allows 100; starter 5. This organisation has fewer than 5, so the move works, and back.
    assert.equal((await s.call('PATCH', orgPath(''), { auth: O.owner, body: { plan: 'starter' } })).status, 200);
    assert.equal((await s.call('PATCH', orgPath(''), { auth: O.owner, body: { plan: 'professional' } })).status, 200);
    const made = [];
    for (let i = 0; i < 4; i++) made.push((await post('/campaigns', campaignBody({ name: `Fill ${i}` }))).status);
    assert.ok(made.every((st) => st === 201), JSON.stringify(made));
    const lower = await s.call('PATCH', orgPath(''), { auth: O.owner, body: { plan: 'starter' } });
    assert.equal(lower.status, 409, lower.text);
    assert.equal(lower.body.error.code, 'plan_limit');
  });

  it('writes and audits nothing for an edit that changes nothing, and documents 409 answers', async () => {
    const audited = async () => (await s.call('GET', orgPath('/audit-log?limit=200'), { auth: O.owner })).body.items.length as number;
    const before = await audited();
    assert.equal((await s.call('PATCH', orgPath(''), { auth: O.owner, body: {} })).status, 200);
    assert.equal((await s.call('PATCH', orgPath(''), { auth: O.owner, body: { plan: 'professional' } })).status, 200); // already professional
    assert.equal((await s.call('PATCH', orgPath(`/members/${s.userId('xena@safety.example')}`), { auth: O.owner, body: { role: 'affiliate' } })).status, 200);
    assert.equal(await audited(), before);
    const doc = (await s.call('GET', '/v1/openapi.json')).body;
    assert.ok(doc.paths['/v1/orgs/{orgId}/campaigns'].post.responses['409']);
  });
});

describe('strings that are not text', () => {
  // JSON can carry a lone UTF-16 surrogate ("\ud800"); UTF-8, and so Firestore, cannot.
  it('refuses a lone surrogate in an API body with a 400 naming the field', async () => {
    const r = await s.call('POST', orgPath('/campaigns'), { auth: O.owner, body: campaignBody({ name: 'Spring \ud800 sale' }) });
    assertClientError(r, 400, 'name');
    assert.match(r.body.error.details[0].message, /lone UTF-16 surrogate/);
  });

  it('answers 400, not a 500, to a body nested deeper than a recursive walk could go', async () => {
    const r = await s.call('POST', orgPath('/campaigns'), { auth: O.owner, rawBody: `{"name":${'['.repeat(20_000)}"x"${']'.repeat(20_000)}}`, headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 400, r.text.slice(0, 300));
    assert.ok(r.body.error.details.some((d: { field: string }) => d.field === 'name'), JSON.stringify(r.body.error.details).slice(0, 300));
  });

  it('refuses a lone surrogate in a postback with a 400 naming the field', async () => {
    const { token } = (await s.call('GET', orgPath('/postback-config'), { auth: O.owner })).body;
    const r = await fetch(`${s.baseUrl}/postback`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token, click_id: '\ud800x', txn_id: 'lone-surrogate' }) });
    const body = (await r.json()) as { error: { details: { field: string }[] } };
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.deepEqual(body.error.details.map((d) => d.field), ['click_id']);
  });
});
