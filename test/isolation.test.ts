import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { apiRoutes } from '../functions/api/routes';
import { campaignBody, newOrg, startTestStack, type TestStack } from './helpers/stack';
import { eventually } from './helpers/wait';

/**
 * Walks every /v1/orgs/{orgId}/… route from the outside, as callers who must get nothing: a member of
 * another organisation, another organisation's API key, an analyst trying to write, and an affiliate user
 * reading another affiliate's records. New routes are covered as soon as they are added to the router.
 */
let s: TestStack;
const A = { orgId: '', owner: '', campaign: '', affX: '', affY: '', linkX: '', linkY: '', key: '', keyId: '', analyst: '', affUser: '', clickX: '', clickY: '', convX: '', convY: '' };
let outsider = '';
let outsiderKey = '';
const orgRoutes = apiRoutes.filter((r) => r.path.startsWith('/v1/orgs/:orgId'));

/** Report ranges from the day before to today: what the tests just sent is in them, even across UTC midnight. */
const since = () => new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
const today = () => new Date().toISOString().slice(0, 10);

/** Real ids for every path parameter, and for a GET a range and groupBy where it takes them (it refuses others). */
function fill(path: string, ids: { affiliate: string; link: string; click: string; conversion: string }, method = 'GET'): string {
  const takes = new Set(Object.keys((orgRoutes.find((r) => r.path === path && r.method === method)?.query as { shape?: object } | undefined)?.shape ?? {}));
  const params = new URLSearchParams(Object.entries({ from: since(), to: today(), groupBy: 'affiliate,link' }).filter(([k]) => takes.has(k)));
  const query = method === 'GET' && params.size ? `?${params}` : '';
  return path
    .replace(':orgId', A.orgId)
    .replace(/campaigns\/:id/, `campaigns/${A.campaign}`)
    .replace(/affiliates\/:id/, `affiliates/${ids.affiliate}`)
    .replace(/links\/:id/, `links/${ids.link}`)
    .replace(/api-keys\/:id/, `api-keys/${A.keyId}`)
    .replace(/conversions\/:id/, `conversions/${ids.conversion}`)
    .replace(':clickId', ids.click)
    .replace(':userId', s.userId('ana@a.example'))
    .replace(/:[a-zA-Z]+/g, 'x') + query;
}

async function trackConversion(linkId: string, txnId: string): Promise<{ clickId: string; conversionId: string }> {
  const res = await fetch(`${s.baseUrl}/c/${linkId}`, { redirect: 'manual', headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0' } });
  const clickId = new URL(res.headers.get('location')!).searchParams.get('cid')!;
  const token = (await s.call('GET', `/v1/orgs/${A.orgId}/postback-config`, { auth: A.owner })).body.token;
  const pb = await s.call('GET', `/postback?token=${token}&click_id=${encodeURIComponent(clickId)}&txn_id=${txnId}&amount=20.00`);
  const conversionId = pb.body.conversionId as string;
  await eventually(async () => ((await s.call('GET', `/v1/orgs/${A.orgId}/conversions/${conversionId}`, { auth: A.owner })).status === 200 ? true : undefined), 'conversion');
  await eventually(async () => ((await s.call('GET', `/v1/orgs/${A.orgId}/clicks/${clickId}`, { auth: A.owner })).status === 200 ? true : undefined), 'click');
  return { clickId, conversionId };
}

const anyBody = () => ({ ...campaignBody(), name: 'Intruder', role: 'admin', email: 'intruder@example.com', campaignId: A.campaign, affiliateId: A.affY, status: 'paused' });

async function auditCount(): Promise<number> {
  const r = await s.call('GET', `/v1/orgs/${A.orgId}/audit-log?limit=200`, { auth: A.owner });
  return r.body.items.length;
}

before(async () => {
  s = await startTestStack();
  const a = await newOrg(s, 'alice@a.example');
  A.orgId = a.orgId;
  A.owner = a.token;
  const call = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${A.orgId}${path}`, { auth: A.owner, body });
  A.campaign = (await call('/campaigns', campaignBody({ name: 'Secret campaign A' }))).body.id;
  await call('/members', { email: 'ana@a.example', role: 'analyst' });
  await call('/members', { email: 'xavier@a.example', role: 'affiliate' });
  A.affX = (await call('/affiliates', { name: 'Xavier Media', email: 'x@x.example', userIds: [s.userId('xavier@a.example')] })).body.id;
  A.affY = (await call('/affiliates', { name: 'Yolanda Deals', email: 'y@y.example' })).body.id;
  A.linkX = (await call('/links', { campaignId: A.campaign, affiliateId: A.affX })).body.id;
  A.linkY = (await call('/links', { campaignId: A.campaign, affiliateId: A.affY })).body.id;
  const key = (await call('/api-keys', { name: 'A key', role: 'admin' })).body;
  A.key = key.key;
  A.keyId = key.id;
  A.analyst = s.token('ana@a.example');
  A.affUser = s.token('xavier@a.example');
  ({ clickId: A.clickX, conversionId: A.convX } = await trackConversion(A.linkX, 'tx-x'));
  ({ clickId: A.clickY, conversionId: A.convY } = await trackConversion(A.linkY, 'tx-y'));
  const b = await newOrg(s, 'bob@b.example');
  outsider = b.token;
  outsiderKey = (await s.call('POST', `/v1/orgs/${b.orgId}/api-keys`, { auth: b.token, body: { name: 'B key', role: 'admin' } })).body.key;
});
after(() => s.close());

describe('tenant isolation, from the outside', () => {
  it('has routes to walk', () => assert.ok(orgRoutes.length >= 20, `${orgRoutes.length} routes`));

  it('answers 404 and reveals nothing to a member of another organisation, on every route', async () => {
    const before = await auditCount();
    for (const auth of [outsider, outsiderKey]) {
      for (const r of orgRoutes) {
        const path = fill(r.path, { affiliate: A.affX, link: A.linkX, click: A.clickX, conversion: A.convX }, r.method);
        const res = await s.call(r.method, path, { auth, body: r.method === 'GET' || r.method === 'DELETE' ? undefined : anyBody() });
        assert.equal(res.status, 404, `${r.method} ${path}: ${res.text}`);
        for (const secret of [A.campaign, 'Secret campaign A', A.affX, 'Xavier', A.linkX, 'alice@a.example', A.clickX, A.convX]) assert.ok(!res.text.includes(secret), `${r.method} ${path} leaked ${secret}`);
      }
    }
    assert.equal(await auditCount(), before, 'nothing was written');
  });

  it('answers 403 to an analyst on every write, and writes nothing', async () => {
    const before = await auditCount();
    for (const r of orgRoutes.filter((x) => x.method !== 'GET')) {
      const path = fill(r.path, { affiliate: A.affX, link: A.linkX, click: A.clickX, conversion: A.convX }, r.method);
      const res = await s.call(r.method, path, { auth: A.analyst, body: r.method === 'DELETE' ? undefined : anyBody() });
      assert.equal(res.status, 403, `${r.method} ${path}: ${res.text}`);
    }
    assert.equal(await auditCount(), before);
    // Reads still work for the analyst.
    assert.equal((await s.call('GET', `/v1/orgs/${A.orgId}/campaigns`, { auth: A.analyst })).status, 200);
  });

  it("shows an affiliate user only its own affiliate's records, on every read", async () => {
    for (const r of orgRoutes.filter((x) => x.method === 'GET')) {
      const path = fill(r.path, { affiliate: A.affY, link: A.linkY, click: A.clickY, conversion: A.convY });
      const res = await s.call('GET', path, { auth: A.affUser });
      assert.ok([200, 403, 404].includes(res.status), `${path}: ${res.status} ${res.text}`);
      for (const secret of [A.affY, 'Yolanda', A.linkY, 'ana@a.example', A.keyId, A.key, A.clickY, A.convY]) assert.ok(!res.text.includes(secret), `GET ${path} leaked ${secret}`);
      if (res.status === 200) assert.ok(!res.text.includes('"revenue"'), `GET ${path} shows the advertiser's revenue to an affiliate`);
    }
    const mine = await s.call('GET', `/v1/orgs/${A.orgId}/links`, { auth: A.affUser });
    assert.deepEqual(mine.body.items.map((l: { id: string }) => l.id), [A.linkX]);
    const myConversions = await s.call('GET', `/v1/orgs/${A.orgId}/conversions`, { auth: A.affUser });
    assert.deepEqual(myConversions.body.items.map((c: { id: string }) => c.id), [A.convX]);
    const myReport = await eventually(async () => {
      const r = await s.call('GET', `/v1/orgs/${A.orgId}/reports?from=${since()}&to=${today()}&groupBy=affiliate`, { auth: A.affUser });
      return r.body.totals.conversions === 1 ? r.body : undefined;
    }, 'affiliate report');
    assert.deepEqual(myReport.rows.map((r: { affiliate: string }) => r.affiliate), [A.affX]);
    // Asking for another affiliate narrows to nothing; the owner's filter picks that affiliate out.
    const report = (auth: string, affiliateId: string) => s.call('GET', `/v1/orgs/${A.orgId}/reports?from=${since()}&to=${today()}&groupBy=affiliate&affiliateId=${affiliateId}`, { auth });
    assert.deepEqual((await report(A.affUser, A.affY)).body.rows, []);
    assert.deepEqual((await report(A.affUser, A.affX)).body.rows.map((r: { affiliate: string }) => r.affiliate), [A.affX]);
    assert.deepEqual((await report(A.owner, A.affY)).body.rows.map((r: { affiliate: string; conversions: number }) => [r.affiliate, r.conversions]), [[A.affY, 1]]);
    // A filter the report does not know is refused, not ignored (the whole organisation's totals would pass for it).
    for (const route of ['reports', 'stats', 'conversions']) {
      const typo = await s.call('GET', `/v1/orgs/${A.orgId}/${route}?from=${since()}&to=${today()}&affiliate_id=${A.affY}`, { auth: A.owner });
      assert.equal(typo.status, 400, `${route}: ${typo.text}`);
      assert.deepEqual(typo.body.error.details.map((d: { field: string }) => d.field), ['affiliate_id'], route);
    }
    // The live counters too: the organisation has two clicks and two sales, the affiliate sees its own one of each.
    const stats = (auth: string) => s.call('GET', `/v1/orgs/${A.orgId}/stats?from=${since()}&to=${today()}`, { auth });
    await eventually(async () => ((await stats(A.owner)).body.totals.conversions === 2 ? true : undefined), 'both sales counted');
    const myStats = (await stats(A.affUser)).body.totals;
    assert.deepEqual([myStats.clicks, myStats.conversions], [1, 1]);
    const myAffiliates = await s.call('GET', `/v1/orgs/${A.orgId}/affiliates`, { auth: A.affUser });
    assert.deepEqual(myAffiliates.body.items.map((x: { id: string }) => x.id), [A.affX]);
    // It may create links for itself, never for another affiliate.
    assert.equal((await s.call('POST', `/v1/orgs/${A.orgId}/links`, { auth: A.affUser, body: { campaignId: A.campaign, affiliateId: A.affX } })).status, 201);
    assert.equal((await s.call('POST', `/v1/orgs/${A.orgId}/links`, { auth: A.affUser, body: { campaignId: A.campaign, affiliateId: A.affY } })).status, 404);
  });

  it('shows an affiliate user linked to more affiliates than one Firestore `in` takes all of them, page by page, and no one else', async () => {
    const call = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${A.orgId}${path}`, { auth: A.owner, body });
    await call('/members', { email: 'nina@a.example', role: 'affiliate' });
    const nina = s.token('nina@a.example');
    const hers: string[] = [];
    for (let i = 0; i < 32; i++) hers.push((await call('/affiliates', { name: `Nina ${i}`, email: `n${i}@n.example`, userIds: [s.userId('nina@a.example')] })).body.id);
    const pages = async (path: string, limit: number) => {
      const ids: string[] = [];
      for (let cursor: string | null = null, n = 0; n === 0 || cursor; n++) {
        const r = await s.call('GET', `/v1/orgs/${A.orgId}/${path}${path.includes('?') ? '&' : '?'}limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`, { auth: nina });
        assert.equal(r.status, 200, r.text);
        assert.ok(r.body.items.length <= limit);
        ids.push(...r.body.items.map((x: { id: string }) => x.id));
        cursor = r.body.nextCursor;
      }
      return ids;
    };
    // In the order the owner sees them, without repeats or gaps across the pages.
    const ownerOrder = (await s.call('GET', `/v1/orgs/${A.orgId}/affiliates?limit=200`, { auth: A.owner })).body.items.map((x: { id: string }) => x.id);
    assert.deepEqual(await pages('affiliates', 7), ownerOrder.filter((id: string) => hers.includes(id)));
    // A sale on her first affiliate and one on her last (beyond the first 30): both listed, newest first, and counted.
    const [first, last] = [hers[0]!, hers[31]!];
    const sale = async (affiliateId: string, txnId: string) => (await trackConversion((await call('/links', { campaignId: A.campaign, affiliateId })).body.id, txnId)).conversionId;
    const early = await sale(first, 'tx-nina-1');
    const late = await sale(last, 'tx-nina-32');
    assert.deepEqual(await pages('conversions', 1), [late, early]);
    assert.deepEqual(await pages(`conversions?affiliateId=${last}`, 5), [late]);
    assert.deepEqual(await pages(`conversions?affiliateId=${A.affY}`, 5), []);
    assert.equal((await pages('links', 50)).length, 2);
    const balance = await s.call('GET', `/v1/orgs/${A.orgId}/affiliates/${last}/balance`, { auth: nina });
    assert.equal(balance.status, 200, balance.text);
    assert.equal(balance.body.balances.length, 1);
    assert.ok(balance.body.balances[0].pending > 0, balance.text);
    const stats = await eventually(async () => {
      const r = await s.call('GET', `/v1/orgs/${A.orgId}/stats?from=${since()}&to=${today()}`, { auth: nina });
      return r.body.totals.conversions === 2 ? r.body.totals : undefined;
    }, 'her two sales counted');
    assert.equal(stats.clicks, 2);
    const lastOnly = await s.call('GET', `/v1/orgs/${A.orgId}/stats?from=${since()}&to=${today()}&affiliateId=${last}`, { auth: nina });
    assert.equal(lastOnly.body.totals.conversions, 1);
  });
});
