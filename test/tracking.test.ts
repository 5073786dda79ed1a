import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ClickEvent, PostbackEvent } from '../shared/domain/events';
import { deterministicId } from '../shared/ids';
import { campaignBody, newOrg, startTestStack, type TestStack } from './helpers/stack';
import { emulatorRest, eventually } from './helpers/wait';

/**
 * The tracking pipeline end to end, through the real Pub/Sub and Firestore emulators: the click and
 * postback functions publish, the emulator pushes to both workers, and the results are read back through
 * the API as a user would.
 */
let s: TestStack;
/** The shared organisation of this file. Its starter plan takes 5 campaigns, and the tests here make 5: a test that needs another uses an organisation of its own (newOrg). */
const org = { id: '', token: '', campaign: '', affiliate: '', link: '', postbackToken: '', pixelToken: '' };
const today = () => new Date().toISOString().slice(0, 10);
/** Where a query for what a test just sent starts: the day before, so a run across UTC midnight still finds it. */
const since = () => new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);

async function click(linkId: string, query = '', headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(`${s.baseUrl}/c/${linkId}${query}`, { method, redirect: 'manual', headers: { 'user-agent': 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36', 'x-forwarded-for': '203.0.113.7', ...headers } });
  const location = res.headers.get('location') ?? '';
  const clickId = location ? new URL(location).searchParams.get('cid') ?? '' : '';
  return { res, location, clickId };
}

const api = (path: string) => s.call('GET', `/v1/orgs/${org.id}${path}`, { auth: org.token });
const postback = (params: Record<string, string>) => s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, ...params })}`);
/**
 * Hands an event to the state worker as a Pub/Sub push delivery would, bypassing the topic (to control
 * redelivery). With `redeliver`, for the tests that race writes on purpose, a 5xx is delivered again (a few
 * times) as Pub/Sub would: on a slow machine a transaction may run out of attempts, and the worker's answer to
 * that is a retry. Each redelivery is counted in `redeliveries`, which those tests report.
 */
const redeliveries = { count: 0 };
/** A postback event as the intake publishes it (its id from the organisation and txn id), for deliverToStateWorker. */
const postbackEvent = (o: { orgId: string; txnId: string; clickId: string; amount?: number; occurredAt?: string }): PostbackEvent => ({
  type: 'postback', eventId: deterministicId('cnv', o.orgId, 'txn', o.txnId), orgId: o.orgId, clickId: o.clickId, txnId: o.txnId, event: 'conversion',
  amount: o.amount ?? 1000, currency: null, occurredAt: o.occurredAt ?? new Date().toISOString(), via: 'postback',
});
/** A desktop visitor's click as the click function publishes it, for deliverToStateWorker. */
const clickEvent = (o: { eventId: string; linkId: string; campaignId: string; affiliateId: string; at: number; sub1: string; visitorHash: string; bot?: string }): ClickEvent => ({
  type: 'click', eventId: o.eventId, orgId: org.id, linkId: o.linkId, campaignId: o.campaignId, affiliateId: o.affiliateId,
  occurredAt: new Date(o.at).toISOString(), attributionWindowDays: 30, sub1: o.sub1, sub2: null, sub3: null, sub4: null, sub5: null,
  visitorHash: o.visitorHash, ipHash: 'i', ipPrefix: null, country: null, device: 'desktop', os: null, browser: null, referrer: null,
  isBot: o.bot !== undefined, botReason: o.bot ?? null,
});
async function deliverToStateWorker(event: object, messageId: string, opts: { redeliver?: boolean } = {}): Promise<Response> {
  for (let attempt = 1; ; attempt++) {
    const r = await fetch(`${s.baseUrl}/_push/state-writer/projects/${process.env.GOOGLE_CLOUD_PROJECT}/topics/tracking-events`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ subscription: 'projects/p/subscriptions/s', message: { data: Buffer.from(JSON.stringify(event)).toString('base64'), messageId, attributes: {} } }),
    });
    if (r.status < 500 || !opts.redeliver || attempt === 5) return r;
    redeliveries.count++;
    await r.arrayBuffer();
  }
}

before(async () => {
  s = await startTestStack({ LINK_CACHE_TTL_SECONDS: '0', STATS_MAX_COUNTERS: '50' });
  const o = await newOrg(s, 'tracker@example.com');
  org.id = o.orgId;
  org.token = o.token;
  const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${org.id}${path}`, { auth: org.token, body });
  org.campaign = (await post('/campaigns', campaignBody({ payout: { type: 'revshare', percent: 12.5 }, revenue: { type: 'cps', percent: 20 }, holdDays: 14 }))).body.id;
  org.affiliate = (await post('/affiliates', { name: 'Aff', email: 'aff@example.com' })).body.id;
  org.link = (await post('/links', { campaignId: org.campaign, affiliateId: org.affiliate })).body.id;
  const tokens = (await api('/postback-config')).body;
  org.postbackToken = tokens.token;
  org.pixelToken = tokens.pixelToken;
});
after(() => s.close());

describe('click function', () => {
  it('redirects at once with macros filled and records exactly one click in Firestore, the stats and the report', async () => {
    const { res, location, clickId } = await click(org.link, '?sub1=spring&sub2=banner%20top&sub3=');
    assert.equal(res.status, 302);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.match(res.headers.get('set-cookie') ?? '', new RegExp(`^abp_cid_${org.id}=${clickId.replace(/[.]/g, '\\.')};`), "the organisation's own click cookie");
    // First-party, script-proof, sent on top-level navigation, for the campaign's 30-day attribution window.
    const cookie = (res.headers.get('set-cookie') ?? '').split('; ');
    for (const attribute of ['Max-Age=2592000', 'Path=/', 'HttpOnly', 'SameSite=Lax']) assert.ok(cookie.includes(attribute), `${attribute} in ${cookie.join('; ')}`);
    assert.ok(Math.abs(Date.parse(cookie.find((a) => a.startsWith('Expires='))!.slice(8)) - (Date.now() + 2_592_000_000)) < 60_000);
    const url = new URL(location);
    assert.equal(url.host, 'shop.example.com');
    assert.equal(url.searchParams.get('s1'), 'spring');
    assert.equal(url.searchParams.get('aff'), org.affiliate);
    const stored = await eventually(async () => { const r = await api(`/clicks/${clickId}`); return r.status === 200 ? r.body : undefined; }, 'click document');
    assert.equal(stored.sub2, 'banner top');
    assert.equal(stored.sub3, null, 'an empty sub id is none, not a value of its own in reports');
    assert.equal(stored.isBot, false);
    assert.equal(stored.unique, true);
    assert.equal(stored.ipPrefix, '203.0.113.0/24');
    assert.equal(stored.device, 'desktop');
    // Kept for the campaign's 30-day attribution window plus a 7-day margin, then removed by the TTL policy.
    assert.equal(Date.parse(stored.expiresAt) - Date.parse(stored.createdAt), 37 * 86_400_000);
    assert.ok(!JSON.stringify(stored).includes('203.0.113.7'), 'the raw IP is never stored');
    const report = await eventually(async () => {
      const r = await api(`/reports?from=${since()}&to=${today()}&groupBy=sub1`);
      return r.body?.rows?.find((x: { sub1: string }) => x.sub1 === 'spring');
    }, 'report row');
    assert.equal(report.clicks, 1);
    const stats = await api(`/stats?from=${since()}&to=${today()}`);
    assert.ok(stats.body.totals.clicks >= 1);
  });

  it('encodes macros so a sub id cannot change where the visitor goes', async () => {
    for (const evil of ['"><script>alert(1)</script>', 'https://evil.example/', '@evil.example', '//evil.example', '&cid=forged#x']) {
      const { res, location } = await click(org.link, `?sub1=${encodeURIComponent(evil)}`);
      assert.equal(res.status, 302);
      const url = new URL(location);
      assert.equal(url.host, 'shop.example.com', evil);
      assert.equal(url.searchParams.get('s1'), evil);
      assert.equal(url.searchParams.getAll('cid').length, 1);
    }
  });

  it('declines a browser\'s prefetch, so that the click it anticipates is recorded when the visitor makes it', async () => {
    for (const headers of [{ 'sec-purpose': 'prefetch' }, { 'sec-purpose': 'prefetch;prerender' }, { purpose: 'prefetch' }] as Record<string, string>[]) {
      const prefetch = await click(org.link, '?sub1=prefetched', headers);
      assert.equal(prefetch.res.status, 503, JSON.stringify(headers));
      assert.equal(prefetch.res.headers.get('location'), null);
      assert.equal(prefetch.res.headers.get('set-cookie'), null);
      assert.equal(prefetch.res.headers.get('cache-control'), 'no-store');
      assert.match(await prefetch.res.text(), /Prefetch declined/);
    }
    // The visitor then clicks: one click, a person's, with its cookie.
    const real = await click(org.link, '?sub1=prefetched');
    assert.equal(real.res.status, 302);
    assert.ok(real.res.headers.get('set-cookie'));
    const recorded = await eventually(async () => { const r = await api(`/clicks/${real.clickId}`); return r.status === 200 ? r.body : undefined; }, 'the real click');
    assert.equal(recorded.isBot, false);
    // The prefetches were never published (sent before the click, they would have been counted by now).
    const row = await eventually(async () => {
      const r = await api(`/reports?from=${since()}&to=${today()}&groupBy=sub1`);
      return r.body?.rows?.find((x: { sub1: string }) => x.sub1 === 'prefetched');
    }, 'report row');
    assert.deepEqual([row.clicks, row.botClicks], [1, 0]);
  });

  it('takes the first value of a sub id sent twice, as the postback does', async () => {
    const { res, location } = await click(org.link, '?sub1=first&sub1=second');
    assert.equal(res.status, 302);
    assert.equal(new URL(location).searchParams.get('s1'), 'first');
  });

  it('sends a destination with spaces or non-ASCII characters as a valid, percent-encoded Location', async () => {
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${org.id}${path}`, { auth: org.token, body });
    const campaignId = (await post('/campaigns', campaignBody({ name: 'Umlaut', destinationUrl: 'https://shop.example.com/päge/winter sale?s1={sub1}' }))).body.id as string;
    const linkId = (await post('/links', { campaignId, affiliateId: org.affiliate })).body.id as string;
    const { res, location } = await click(linkId, '?sub1=grüße');
    assert.equal(res.status, 302);
    assert.equal(location, 'https://shop.example.com/p%C3%A4ge/winter%20sale?s1=gr%C3%BC%C3%9Fe');
  });

  it('redirects bots, previews and HEAD requests but records them as bot clicks, and gives them no click cookie', async () => {
    const bot = await click(org.link, '?sub1=botcheck', { 'user-agent': 'facebookexternalhit/1.1' });
    assert.equal(bot.res.status, 302);
    const head = await click(org.link, '?sub1=botcheck', {}, 'HEAD');
    assert.equal(head.res.status, 302);
    const linkPreview = await click(org.link, '?sub1=botcheck', { 'x-purpose': 'preview' });
    assert.equal(linkPreview.res.status, 302);
    for (const { clickId: id, res } of [bot, head, linkPreview]) {
      // A bot's click id in the visitor's cookie would replace the click the pixel is to credit.
      assert.equal(res.headers.get('set-cookie'), null);
      const c = await eventually(async () => { const r = await api(`/clicks/${id}`); return r.status === 200 ? r.body : undefined; }, 'bot click');
      assert.equal(c.isBot, true);
      assert.equal(c.unique, false);
    }
    assert.deepEqual(
      await Promise.all([bot, head, linkPreview].map(async (c) => (await api(`/clicks/${c.clickId}`)).body.botReason)),
      ['bot_user_agent', 'head_request', 'link_preview'],
    );
    // Also where the campaign targets devices: a crawler's device is never in the list, and it still gets the redirect.
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${org.id}${path}`, { auth: org.token, body });
    const mobileOnly = (await post('/campaigns', campaignBody({ name: 'Mobile only', targeting: { devices: ['mobile'] } }))).body.id as string;
    const mobileLink = (await post('/links', { campaignId: mobileOnly, affiliateId: org.affiliate })).body.id as string;
    const preview = await click(mobileLink, '', { 'user-agent': 'Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)' });
    assert.equal(preview.res.status, 302);
    assert.equal(new URL(preview.location).host, 'shop.example.com');
    const recorded = await eventually(async () => { const r = await api(`/clicks/${preview.clickId}`); return r.status === 200 ? r.body : undefined; }, 'preview click');
    assert.deepEqual([recorded.isBot, recorded.botReason], [true, 'bot_user_agent']);
    assert.equal((await click(mobileLink)).res.status, 404, 'a desktop visitor is still off target');
    // Archived, it leaves room for the campaigns later tests make (the Starter plan allows 5 not archived).
    assert.equal((await s.call('PATCH', `/v1/orgs/${org.id}/campaigns/${mobileOnly}`, { auth: org.token, body: { status: 'archived' } })).status, 200);
  });

  it("holds a sale on a bot's click for review even when the postback is handled before the click", async () => {
    const { verifyClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const key = secrets().clickSigningKey;
    const bot = await click(org.link, '?sub1=botsale', { 'user-agent': 'Googlebot/2.1 (+http://www.google.com/bot.html)' });
    const person = await click(org.link, '?sub1=botsale');
    assert.deepEqual([verifyClickId(key, bot.clickId)?.bot, verifyClickId(key, person.clickId)?.bot], [true, false], 'the click id says whether a bot made it');
    // A bot's click whose click event the state worker has not seen (none was ever published): only its id says.
    const { mintClickId } = await import('../shared/domain/click-id');
    const sale = postbackEvent({ orgId: org.id, txnId: 'bot-sale-1', clickId: mintClickId(key, org.link, Date.now() - 60_000, true) });
    const delivered = await deliverToStateWorker(sale, 'bot-sale-1');
    assert.equal(delivered.ok, true);
    const conv = (await api(`/conversions/${sale.eventId}`)).body;
    assert.deepEqual([conv.status, conv.reasons], ['pending', ['bot_click']]);
  });

  it('counts a repeat click by the same visitor within the hour as not unique', async () => {
    const headers = { 'x-forwarded-for': '198.51.100.20', 'user-agent': 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1' };
    const first = await click(org.link, '?sub3=repeat', headers);
    const c1 = await eventually(async () => { const r = await api(`/clicks/${first.clickId}`); return r.status === 200 ? r.body : undefined; }, 'first');
    const second = await click(org.link, '?sub3=repeat', headers);
    const c2 = await eventually(async () => { const r = await api(`/clicks/${second.clickId}`); return r.status === 200 ? r.body : undefined; }, 'second');
    assert.deepEqual([c1.unique, c2.unique, c2.device], [true, false, 'mobile']);
  });

  it('answers 404 for unknown links, and sends paused campaigns to the fallback URL', async () => {
    assert.equal((await click('nosuchlink')).res.status, 404);
    const tooLong = await click(org.link, `?sub1=${'x'.repeat(256)}`);
    assert.equal(tooLong.res.status, 400);
    assert.equal(await tooLong.res.text(), 'sub1 must be at most 255 characters');
    // 255 characters and parameters other than sub ids pass the check (and meet the unknown link).
    assert.equal((await click('nosuchlink', `?sub1=${'x'.repeat(255)}&utm_source=a&utm_source=b`)).res.status, 404);
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${org.id}${path}`, { auth: org.token, body });
    const paused = (await post('/campaigns', campaignBody({ status: 'paused' }))).body.id;
    const link = (await post('/links', { campaignId: paused, affiliateId: org.affiliate })).body.id;
    assert.equal((await click(link)).res.status, 404);
    await s.call('PATCH', `/v1/orgs/${org.id}`, { auth: org.token, body: { fallbackUrl: 'https://fallback.example.com/offers' } });
    const r = await click(link);
    assert.equal(r.res.status, 302);
    assert.equal(r.location, 'https://fallback.example.com/offers');
  });
});

describe('live stats', () => {
  it('refuse a range with more counters than one request may read, and show a currency only once it has money', async () => {
    const { OrgScope } = await import('../functions/services/tenancy');
    const counters = OrgScope.system(org.id, 'test').collection('counters');
    // 60 days of one campaign and affiliate in 2020, one click each (STATS_MAX_COUNTERS is 50 in this file).
    const days = Array.from({ length: 60 }, (_, i) => new Date(Date.UTC(2020, 0, 1 + i)).toISOString().slice(0, 10));
    await Promise.all(days.map((day) => counters.doc(`${day}_cmp_cap_aff_cap_0`).set({ orgId: org.id, day, campaignId: 'cmp_cap', affiliateId: 'aff_cap', clicks: 1, uniqueClicks: 1, botClicks: 0, conversions: 0, revenue: {}, payout: {} })));
    const wide = await api('/stats?from=2020-01-01&to=2020-03-31');
    assert.equal(wide.status, 400, wide.text);
    assert.match(wide.body.error.message, /More than 50 live counters in this range: narrow it/);
    const narrow = await api('/stats?from=2020-01-01&to=2020-01-31');
    assert.deepEqual([narrow.status, narrow.body.totals?.clicks, narrow.body.days?.length], [200, 31, 31]);
    // A sale reversed takes its counter back to 0 in its currency: shown as no money, as the report shows it.
    await counters.doc('2019-06-01_cmp_cap_aff_cap_0').set({ orgId: org.id, day: '2019-06-01', campaignId: 'cmp_cap', affiliateId: 'aff_cap', clicks: 0, uniqueClicks: 0, botClicks: 0, conversions: 1, revenue: { USD: 0, EUR: 500 }, payout: { USD: 0, EUR: 100 } });
    const reversed = await api('/stats?from=2019-06-01&to=2019-06-01');
    assert.deepEqual([reversed.body.totals.revenue, reversed.body.totals.payout, reversed.body.days[0].payout], [{ EUR: 500 }, { EUR: 100 }, { EUR: 100 }]);
  });
});

describe('click caps', () => {
  it('sends visitors to the fallback once a campaign has had its clicks for the day, and records none of them', async () => {
    const { orgId, token } = await newOrg(s, 'click-capped@example.com');
    const call = (method: string, path: string, body?: unknown) => s.call(method, `/v1/orgs/${orgId}${path}`, { auth: token, body });
    assert.equal((await call('PATCH', '', { fallbackUrl: 'https://fallback.example.com/more' })).status, 200);
    const affiliate = (await call('POST', '/affiliates', { name: 'Capped clicks', email: 'capped-clicks@example.com' })).body.id as string;
    const campaign = (await call('POST', '/campaigns', campaignBody({ caps: { daily: { clicks: 2 } } }))).body.id as string;
    const link = (await call('POST', '/links', { campaignId: campaign, affiliateId: affiliate })).body.id as string;
    // An uncapped campaign too: a click on it, sent after a refused one and counted, shows the pipeline has
    // caught up, so a refused click that had been recorded would be counted by then.
    const open = (await call('POST', '/campaigns', campaignBody({ name: 'Uncapped' }))).body.id as string;
    const openLink = (await call('POST', '/links', { campaignId: open, affiliateId: affiliate })).body.id as string;
    const counted = async (c = campaign) => ((await call('GET', `/stats?from=${since()}&to=${today()}&campaignId=${c}`)).body.totals.clicks as number);
    let visitor = 0;
    const visit = () => click(link, '', { 'x-forwarded-for': `198.51.100.${++visitor}` });
    for (const _ of [1, 2]) assert.equal(new URL((await visit()).location).host, 'shop.example.com');
    await eventually(async () => ((await counted()) === 2 ? true : undefined), 'two clicks counted');
    // The cap is soft (the click function reads the live count in the background): a visit or two may still
    // pass before it sees the count, and each of those is recorded and counted like any other.
    let passed = 0;
    const refused = await eventually(async () => {
      const v = await visit();
      if (new URL(v.location).host === 'shop.example.com') passed++;
      return v.location.startsWith('https://fallback.example.com/') ? v : undefined;
    }, 'a visit sent to the fallback');
    assert.equal(refused.res.status, 302);
    assert.equal(refused.res.headers.get('set-cookie'), null, 'a refused visit gets no click id');
    assert.equal(new URL((await click(openLink)).location).host, 'shop.example.com');
    await eventually(async () => ((await counted(open)) === 1 ? true : undefined), 'the later click on the uncapped campaign counted');
    await eventually(async () => ((await counted()) === 2 + passed ? true : undefined), `the ${2 + passed} visits that passed counted, and not the refused one`);
  });
});

describe('postback function', () => {
  it('books an attributed conversion with a pending commission, once, however often it is sent', async () => {
    const { clickId } = await click(org.link, '?sub1=buyer');
    await new Promise((r) => setTimeout(r, 3100)); // past the click-to-conversion fraud threshold
    const sends = await Promise.all([1, 2, 3].map(() => postback({ click_id: clickId, txn_id: 'order-1001', amount: '49.99' })));
    assert.deepEqual(sends.map((r) => r.status), [200, 200, 200]);
    assert.equal(new Set(sends.map((r) => r.body.conversionId)).size, 1);
    assert.deepEqual(sends.map((r) => r.body.status).sort(), ['accepted', 'duplicate', 'duplicate']);
    const later = await postback({ click_id: clickId, txn_id: 'order-1001', amount: '49.99' });
    assert.equal(later.body.status, 'duplicate');
    const id = sends[0]!.body.conversionId;
    const conv = await eventually(async () => { const r = await api(`/conversions/${id}`); return r.status === 200 ? r.body : undefined; }, 'conversion');
    assert.deepEqual(
      { status: conv.status, amount: conv.amount, currency: conv.currency, payout: conv.payout, revenue: conv.revenue, campaignId: conv.campaignId, affiliateId: conv.affiliateId, linkId: conv.linkId, txnId: conv.txnId, reasons: conv.reasons },
      // 12.5% of 4999 = 624.875 → 625; 20% of 4999 = 999.8 → 1000 (half-even on minor units)
      { status: 'pending', amount: 4999, currency: 'USD', payout: 625, revenue: 1000, campaignId: org.campaign, affiliateId: org.affiliate, linkId: org.link, txnId: 'order-1001', reasons: [] },
    );
    const list = await api(`/conversions?affiliateId=${org.affiliate}&status=pending`);
    assert.equal(list.body.items.filter((c: { txnId: string }) => c.txnId === 'order-1001').length, 1);
    // From its own minute, written without seconds: still in (instants are compared as stored, to the millisecond).
    const minute = `${(conv.createdAt as string).slice(0, 16)}Z`;
    const fromMinute = await api(`/conversions?from=${minute}&to=${minute.slice(0, 10)}`);
    assert.ok(fromMinute.body.items.some((c: { txnId: string }) => c.txnId === 'order-1001'), JSON.stringify(fromMinute.body));
    const report = await eventually(async () => {
      const r = await api(`/reports?from=${since()}&to=${today()}&groupBy=sub1`);
      const row = r.body?.rows?.find((x: { sub1: string }) => x.sub1 === 'buyer');
      return row?.conversions ? row : undefined;
    }, 'conversion in report');
    assert.deepEqual([report.conversions, report.payout, report.revenue], [1, { USD: 625 }, { USD: 1000 }]);
  });

  it('keeps a campaign within its conversion and payout caps, even when its postbacks race', async (t) => {
    const redeliveredBefore = redeliveries.count;
    t.after(() => t.diagnostic(`deliveries answered 5xx and delivered again: ${redeliveries.count - redeliveredBefore}`));
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    // An organisation of its own: the shared one's plan has room for only so many campaigns.
    const { orgId, token } = await newOrg(s, 'capped@example.com');
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${orgId}${path}`, { auth: token, body });
    const get = (path: string) => s.call('GET', `/v1/orgs/${orgId}${path}`, { auth: token });
    const affiliate = (await post('/affiliates', { name: 'Capped', email: 'capped-aff@example.com' })).body.id as string;
    const postbackToken = (await get('/postback-config')).body.token as string;
    const cappedCampaign = async (caps: unknown, payout: unknown = { type: 'cpa', amount: 400 }) => {
      const campaign = (await post('/campaigns', campaignBody({ payout, caps }))).body.id as string;
      const link = (await post('/links', { campaignId: campaign, affiliateId: affiliate })).body.id as string;
      return { campaign, link };
    };
    const settled = async (campaign: string, n: number) =>
      eventually(async () => {
        const items = (await get(`/conversions?campaignId=${campaign}`)).body?.items as { id: string; txnId: string; status: string; reasons: string[]; payout: number; createdAt: string }[] | undefined;
        return items?.length === n ? items : undefined;
      }, `${n} conversions of ${campaign}`);

    // Six sales against a cap of three a day, each delivered three times, all at once: the deliveries reach the
    // state worker over several turns, so several groups book against the cap together.
    const { firestore } = await import('../functions/adapters/firestore');
    const daily = await cappedCampaign({ daily: { conversions: 3 } });
    const sales = Array.from({ length: 6 }, (_, i) =>
      postbackEvent({ orgId, txnId: `capped-${daily.campaign}-${i}`, clickId: mintClickId(secrets().clickSigningKey, daily.link, Date.now() - 60_000 - i) }));
    const deliver = (e: (typeof sales)[number], n: number) => deliverToStateWorker(e, `cap-${n}-${e.eventId}`, { redeliver: true });
    const answers = await Promise.all([1, 2, 3].flatMap((n) => sales.map((e) => deliver(e, n))));
    assert.deepEqual(answers.filter((r) => !r.ok).map((r) => r.status), []);
    const booked = await settled(daily.campaign, 6);
    const credited = booked.filter((c) => c.status === 'pending');
    assert.equal(credited.length, 3);
    assert.ok(credited.every((c) => c.payout === 400));
    for (const c of booked.filter((x) => x.status !== 'pending')) assert.deepEqual([c.status, c.reasons, c.payout], ['rejected', ['daily_conversion_cap'], 0]);
    const usage = (await firestore().doc(`orgs/${orgId}/capUsage/${daily.campaign}_${sales[0]!.occurredAt.slice(0, 10)}_USD`).get()).data();
    assert.deepEqual([usage?.conversions, usage?.payout], [3, 1200], 'each credited sale counted once, however often delivered');
    const usageOf = async (campaign: string, period: string) => {
      const u = (await firestore().doc(`orgs/${orgId}/capUsage/${campaign}_${period}_USD`).get()).data();
      return [u?.conversions, u?.payout];
    };
    const patch = async (id: string, body: unknown) => {
      const r = await s.call('PATCH', `/v1/orgs/${orgId}/conversions/${id}`, { auth: token, body });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    };
    // A credited sale the advertiser rejects gives its room back.
    await patch(credited[0]!.id, { status: 'rejected', reason: 'returned' });
    assert.deepEqual(await usageOf(daily.campaign, sales[0]!.occurredAt.slice(0, 10)), [2, 800]);
    // And leaves the live counters: they count what is credited now.
    const stats = async (campaign: string) => {
      const t = (await get(`/stats?from=${since()}&to=${today()}&campaignId=${campaign}`)).body.totals;
      return [t.conversions, t.payout.USD];
    };
    assert.deepEqual(await stats(daily.campaign), [2, 800]);

    const send = (link: string, txn: string) =>
      s.call('GET', `/postback?${new URLSearchParams({ token: postbackToken, click_id: mintClickId(secrets().clickSigningKey, link, Date.now() - 60_000), txn_id: txn, amount: '10.00' })}`);
    // A payout cap of 10.00 a month at 4.00 a sale: two fit; the third is not split, it is rejected whole.
    // The second approved sale of the month earns 5.00 (a volume tier).
    const monthly = await cappedCampaign({ monthly: { payout: 1000 } }, { type: 'cpa', amount: 400, tiers: [{ minConversions: 2, amount: 500 }] });
    for (const i of [0, 1, 2]) assert.equal((await send(monthly.link, `payout-cap-${monthly.campaign}-${i}`)).status, 200);
    const three = await settled(monthly.campaign, 3);
    const paid = three.map((c) => JSON.stringify([c.status, c.payout, c.reasons])).sort();
    assert.deepEqual(paid, [['pending', 400, []], ['pending', 400, []], ['rejected', 0, ['monthly_payout_cap']]].map((x) => JSON.stringify(x)).sort());
    const month = three[0]!.createdAt.slice(0, 7); // the sales' own month, whenever this line runs
    const [first, second] = three.filter((c) => c.status === 'pending');
    await patch(first!.id, { status: 'approved' });
    await patch(second!.id, { status: 'approved' });
    assert.deepEqual(await usageOf(monthly.campaign, month), [2, 900], 'the tier raised the payout counted');
    // Reversed (the customer returned it): its 5.00 is free again, so a fourth sale at 4.00 fits (4.00 + 4.00 <= 10.00).
    await patch(second!.id, { status: 'reversed', reason: 'refund' });
    assert.deepEqual(await usageOf(monthly.campaign, month), [1, 400]);
    assert.deepEqual(await stats(monthly.campaign), [1, 400], 'the tier and the reversal reach the live counters');
    assert.equal((await send(monthly.link, `payout-cap-${monthly.campaign}-3`)).status, 200);
    const fourth = (await settled(monthly.campaign, 4)).find((c) => c.txnId === `payout-cap-${monthly.campaign}-3`);
    assert.deepEqual([fourth?.status, fourth?.payout], ['pending', 400]);
  });

  it('attributes a postback that arrives before its click was processed', async () => {
    // A click id minted 10 s ago whose click event has not reached the state worker (it never will here).
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const clickId = mintClickId(secrets().clickSigningKey, org.link, Date.now() - 10_000);
    assert.equal((await api(`/clicks/${clickId}`)).status, 404);
    const r = await s.call('POST', '/postback', { body: { token: org.postbackToken, click_id: clickId, txn_id: 'early-1', amount: 10 } });
    assert.equal(r.status, 200);
    const conv = await eventually(async () => { const x = await api(`/conversions/${r.body.conversionId}`); return x.status === 200 ? x.body : undefined; }, 'early conversion');
    assert.deepEqual([conv.campaignId, conv.affiliateId, conv.linkId, conv.status, conv.reasons, conv.payout], [org.campaign, org.affiliate, org.link, 'pending', [], 125]);
  });

  it('holds a conversion reported within 3 s of its click for review, with the reason', async () => {
    // Delivered straight to the state worker with its own times, so the gap is 2 s however slow this machine.
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const clickedAt = Date.now() - 60_000;
    const sale = postbackEvent({ orgId: org.id, txnId: 'fast-1', clickId: mintClickId(secrets().clickSigningKey, org.link, clickedAt), occurredAt: new Date(clickedAt + 2000).toISOString() });
    const r = await deliverToStateWorker(sale, 'fast-1');
    assert.equal(r.ok, true, await r.text());
    const conv = (await api(`/conversions/${sale.eventId}`)).body;
    assert.equal(conv.status, 'pending');
    assert.deepEqual(conv.reasons, ['click_to_conversion_too_fast']);
  });

  it('records forged, unknown and other-organisation click ids as rejected, never credited', async () => {
    const other = await newOrg(s, 'rival@example.com');
    const otherPost = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${other.orgId}${path}`, { auth: other.token, body });
    const oc = (await otherPost('/campaigns', campaignBody())).body.id;
    const oa = (await otherPost('/affiliates', { name: 'R', email: 'r@example.com' })).body.id;
    const ol = (await otherPost('/links', { campaignId: oc, affiliateId: oa })).body.id;
    const foreign = (await click(ol)).clickId;
    const real = (await click(org.link)).clickId;
    const forged = real.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const unknownLink = mintClickId(secrets().clickSigningKey, 'nolinkhere01', Date.now());
    const cases: [string, string][] = [[forged, 'invalid_click_id'], ['garbage', 'invalid_click_id'], [foreign, 'foreign_click'], [unknownLink, 'unknown_click']];
    for (const [clickId, reason] of cases) {
      const r = await postback({ click_id: clickId, txn_id: `bad-${reason}-${clickId.slice(-4)}`, amount: '5.00' });
      assert.equal(r.status, 200);
      const conv = await eventually(async () => { const x = await api(`/conversions/${r.body.conversionId}`); return x.status === 200 ? x.body : undefined; }, reason);
      assert.equal(conv.status, 'rejected');
      assert.deepEqual(conv.reasons, [reason]);
      assert.equal(conv.payout, 0);
      assert.equal(conv.campaignId, null, 'a foreign campaign is not revealed');
      // No currency was sent and no campaign of ours gives one: minor units of an unknown currency mean nothing.
      assert.equal(conv.amount, null);
    }
  });

  it('keeps a sale in another currency than its campaign as sent, rejected for the mismatch', async () => {
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const clickId = mintClickId(secrets().clickSigningKey, org.link, Date.now() - 60_000); // not "too fast"
    const r = await postback({ click_id: clickId, txn_id: 'eur-1', amount: '12.34', currency: 'EUR' });
    const conv = await eventually(async () => { const x = await api(`/conversions/${r.body.conversionId}`); return x.status === 200 ? x.body : undefined; }, 'eur sale');
    assert.deepEqual([conv.status, conv.reasons, conv.amount, conv.currency, conv.payout], ['rejected', ['currency_mismatch'], 1234, 'EUR', 0]);
  });

  it("shows a conversion's later rejection in the report, not only in the conversion list", async () => {
    const { clickId } = await click(org.link, '?sub1=versioned');
    const sale = await postback({ click_id: clickId, txn_id: 'versioned-1', amount: '10.00' });
    const reportRow = (conversions: number) =>
      eventually(async () => {
        const r = await api(`/reports?from=${since()}&to=${today()}&groupBy=sub1`);
        return r.body?.rows?.find((x: { sub1: string; conversions: number; clicks: number }) => x.sub1 === 'versioned' && x.clicks === 1 && x.conversions === conversions);
      }, `report with ${conversions} conversion(s)`);
    assert.deepEqual((await reportRow(1)).payout, { USD: 125 });
    const rejected = await s.call('PATCH', `/v1/orgs/${org.id}/conversions/${sale.body.conversionId}`, { auth: org.token, body: { status: 'rejected', reason: 'fraud' } });
    assert.equal(rejected.status, 200, rejected.text);
    assert.deepEqual((await reportRow(0)).payout, {});
    // Sent at once, so nothing is left for the commissions job's sweep.
    const { firestore } = await import('../functions/adapters/firestore');
    assert.equal((await firestore().doc(`orgs/${org.id}/conversions/${sale.body.conversionId}`).get()).get('analyticsDue'), undefined);
  });

  it('credits a sale sent again with the right click id after a mistyped one, and only once', async () => {
    const { clickId } = await click(org.link, '?sub1=retyped');
    const mistyped = clickId.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    const conversion = async (id: string, status: string) =>
      eventually(async () => { const x = await api(`/conversions/${id}`); return x.body?.status === status ? x.body : undefined; }, `conversion ${status}`);
    const first = await postback({ click_id: mistyped, txn_id: 'retyped-1', amount: '10.00' });
    assert.deepEqual((await conversion(first.body.conversionId, 'rejected')).reasons, ['invalid_click_id']);
    // Another id we never minted does not take its place (delivered straight to the state worker, which answers
    // once it has handled it).
    const forgedAgain = await deliverToStateWorker(postbackEvent({ orgId: org.id, txnId: 'retyped-1', clickId: `${mistyped}x` }), 'retyped-forged-again');
    assert.equal(forgedAgain.ok, true);
    assert.equal((await conversion(first.body.conversionId, 'rejected')).clickId, mistyped);
    const again = await postback({ click_id: clickId, txn_id: 'retyped-1', amount: '10.00' });
    assert.deepEqual([again.body.conversionId, again.body.status], [first.body.conversionId, 'accepted']);
    const credited = await conversion(first.body.conversionId, 'pending');
    assert.deepEqual([credited.clickId, credited.campaignId, credited.payout], [clickId, org.campaign, 125]);
    // The mistyped one, redelivered, changes nothing now (delivered straight to the state worker, which answers
    // once it has handled it); the report counts the sale once.
    const redelivered = await deliverToStateWorker(postbackEvent({ orgId: org.id, txnId: 'retyped-1', clickId: mistyped }), 'retyped-redelivered');
    assert.equal(redelivered.ok, true);
    const row = await eventually(async () => {
      const r = await api(`/reports?from=${since()}&to=${today()}&groupBy=sub1`);
      return r.body?.rows?.find((x: { sub1: string; conversions: number }) => x.sub1 === 'retyped' && x.conversions > 0);
    }, 'retyped sale in report');
    assert.deepEqual([row.conversions, row.payout], [1, { USD: 125 }]);
    assert.equal((await conversion(first.body.conversionId, 'pending')).clickId, clickId);
    // Sent again now, either one is a duplicate.
    for (const id of [clickId, mistyped]) assert.equal((await postback({ click_id: id, txn_id: 'retyped-1', amount: '10.00' })).body.status, 'duplicate');
  });

  it('keeps a sale a person rejected, whatever reason they typed, when it is sent again with another click', async () => {
    const { clickId } = await click(org.link, '?sub1=decided');
    const sale = await postback({ click_id: clickId, txn_id: 'decided-1', amount: '10.00' });
    await eventually(async () => ((await api(`/conversions/${sale.body.conversionId}`)).body?.status === 'pending' ? true : undefined), 'sale booked');
    // The reason a person typed reads like the one the intake gives a mistyped click id.
    const rejected = await s.call('PATCH', `/v1/orgs/${org.id}/conversions/${sale.body.conversionId}`, { auth: org.token, body: { status: 'rejected', reason: 'unknown_click' } });
    assert.equal(rejected.status, 200, rejected.text);
    const { clickId: another } = await click(org.link, '?sub1=decided-again');
    // Delivered straight to the state worker, which answers once it has handled it: handled, not failed (a failure
    // is redelivered until the dead-letter topic takes it).
    const delivered = await deliverToStateWorker(postbackEvent({ orgId: org.id, txnId: 'decided-1', clickId: another }), 'decided-again');
    assert.equal(delivered.ok, true);
    const again = await postback({ click_id: another, txn_id: 'decided-1', amount: '10.00' });
    assert.deepEqual([again.body.conversionId, again.body.status], [sale.body.conversionId, 'duplicate']);
    const now = (await api(`/conversions/${sale.body.conversionId}`)).body;
    assert.deepEqual([now.status, now.clickId, now.reasons.at(-1)], ['rejected', clickId, 'unknown_click']);
  });

  it('rejects bad input with 4xx naming the field', async () => {
    assert.equal((await s.call('GET', '/postback?click_id=x')).status, 401);
    assert.equal((await postback({ click_id: 'x' }).then((r) => r.status)), 200);
    const bad = await s.call('GET', `/postback?token=wrong&click_id=x`);
    assert.equal(bad.status, 401);
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const ours = () => mintClickId(secrets().clickSigningKey, org.link, Date.now() - 60_000);
    const amount = await postback({ click_id: ours(), amount: '12.345' });
    assert.equal(amount.status, 400);
    assert.deepEqual(amount.body.error.details, [{ field: 'amount', message: "must be a decimal amount in the currency's major unit, with at most 2 decimals for USD, e.g. 49.99" }]);
    // No currency sent and a click id not ours: no currency to judge decimals by, and a 400 would leave no record
    // of the sale. It is recorded, rejected, without the amount (in an unknown currency).
    const unjudged = await postback({ click_id: 'x', txn_id: 'kwd-typo-1', amount: '12.345' });
    assert.equal(unjudged.status, 200, unjudged.text);
    const rejected = await eventually(async () => { const x = await api(`/conversions/${unjudged.body.conversionId}`); return x.status === 200 ? x.body : undefined; }, 'the rejected sale');
    assert.deepEqual([rejected.status, rejected.reasons, rejected.amount], ['rejected', ['invalid_click_id'], null]);
    // Order ids sent as JSON numbers past 2^53 have lost digits: two orders would be one conversion.
    const bigTxn = await s.call('POST', '/postback', { rawBody: `{"token":"${org.postbackToken}","click_id":"x","txn_id":12345678901234567891}`, headers: { 'content-type': 'application/json' } });
    assert.deepEqual([bigTxn.status, bigTxn.body.error?.details[0].field], [400, 'txn_id'], bigTxn.text);
    assert.match(bigTxn.body.error.details[0].message, /send the id as a string/);
    const smallTxn = await s.call('POST', '/postback', { body: { token: org.postbackToken, click_id: 'x', txn_id: 42 } });
    assert.equal(smallTxn.status, 200, smallTxn.text);
    assert.equal(smallTxn.body.conversionId, deterministicId('cnv', org.id, 'txn', '42'));
    // More decimals than the currency has, all zeros, is an exact amount shop systems send: 49.990 is 49.99.
    const zeros = await postback({ click_id: ours(), txn_id: 'zeros-1', amount: '49.990' });
    assert.equal(zeros.status, 200, zeros.text);
    const exact = await eventually(async () => { const x = await api(`/conversions/${zeros.body.conversionId}`); return x.status === 200 ? x.body : undefined; }, 'zeros sale');
    assert.deepEqual([exact.amount, exact.currency], [4999, 'USD']);
    // Too large to hold exactly in minor units: refused here, not accepted and then lost in the worker.
    const huge = await postback({ click_id: ours(), amount: '99999999999999.99' });
    assert.deepEqual([huge.status, huge.body.error?.details[0].field], [400, 'amount']);
    // More than one sale can be (10^13 minor units): refused, so that a report's sums of many stay exact.
    const tooMuch = await postback({ click_id: ours(), txn_id: 'too-much', amount: '100000000000.01' });
    assert.deepEqual([tooMuch.status, tooMuch.body.error?.details], [400, [{ field: 'amount', message: 'is more than one sale can be: at most 100000000000.00 USD' }]]);
    assert.equal((await postback({ click_id: ours(), txn_id: 'the-most', amount: '100000000000.00' })).status, 200);
    const missing = await postback({ amount: '1.00' });
    assert.equal(missing.body.error.details[0].field, 'click_id');
    const currency = await postback({ click_id: 'x', currency: 'ZZZ' });
    assert.equal(currency.body.error.details[0].field, 'currency');
    // A body the framework cannot parse never reaches the function: it is still answered in our error shape.
    const broken = await s.call('POST', '/postback', { rawBody: `{"token":"${org.postbackToken}","click_id":`, headers: { 'content-type': 'application/json' } });
    assert.equal(broken.status, 400);
    assert.equal(broken.headers.get('content-type')?.split(';')[0], 'application/json');
    assert.equal(broken.body.error.code, 'bad_request');
    assert.match(broken.body.error.message, /not valid JSON/);
    assert.equal(broken.body.error.details[0].field, '(body)');
    // Bodies with the fields in a shape we do not read are refused as such, not blamed on the token or click id.
    const inArray = await s.call('POST', '/postback', { rawBody: JSON.stringify([{ token: org.postbackToken, click_id: ours() }]), headers: { 'content-type': 'application/json' } });
    assert.deepEqual([inArray.status, inArray.body.error?.details[0]?.field], [400, 'body'], inArray.text);
    const asText = await s.call('POST', '/postback', { rawBody: `token=${org.postbackToken}&click_id=x`, headers: { 'content-type': 'text/plain' } });
    assert.deepEqual([asText.status, asText.body.error?.code], [415, 'unsupported_media_type'], asText.text);
    assert.match(asText.body.error.message, /form \(application\/x-www-form-urlencoded\) or JSON \(application\/json\), not text\/plain/);
    // A query that carries the postback by itself is read as before, whatever body comes with it.
    const queryCarries = await s.call('POST', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: 'x', txn_id: 'query-carries-1' })}`, { rawBody: 'ignored', headers: { 'content-type': 'text/plain' } });
    assert.equal(queryCarries.status, 200, queryCarries.text);
    // A POST with everything in the query and an empty body, as many clients send it.
    const emptyPost = await fetch(`${s.baseUrl}/postback?${new URLSearchParams({ token: org.postbackToken, click_id: 'x', txn_id: 'empty-post-1' })}`, { method: 'POST', headers: { 'content-length': '0' } });
    assert.equal(emptyPost.status, 200, await emptyPost.clone().text());
    // A token longer than any of ours is an unknown token.
    const longToken = await s.call('GET', `/postback?token=${'t'.repeat(201)}&click_id=x`);
    assert.deepEqual([longToken.status, longToken.body.error?.message], [401, 'Unknown postback token (the postback takes the postback token of GET /v1/orgs/{orgId}/postback-config)']);
    // JSON nested deeper than a recursive walk could go: a 400 naming the field, not a 500.
    const deep = await s.call('POST', '/postback', { rawBody: `{"token":"${org.postbackToken}","click_id":${'['.repeat(20_000)}"x"${']'.repeat(20_000)}}`, headers: { 'content-type': 'application/json' } });
    assert.deepEqual([deep.status, deep.body.error?.details[0]?.field], [400, 'click_id'], deep.text.slice(0, 300));
  });

  it('serves the pixel as a GIF whatever happens, taking the click id from the cookie', async () => {
    const { res, clickId } = await click(org.link);
    const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0]!;
    const px = await fetch(`${s.baseUrl}/pixel?token=${org.pixelToken}&txn_id=px-1&amount=3.50`, { headers: { cookie } });
    assert.equal(px.status, 200);
    assert.equal(px.headers.get('content-type'), 'image/gif');
    assert.match(px.headers.get('x-abp-conversion') ?? '', /^accepted/);
    const id = /id=(\S+)/.exec(px.headers.get('x-abp-conversion')!)![1]!;
    const conv = await eventually(async () => { const x = await api(`/conversions/${id}`); return x.status === 200 ? x.body : undefined; }, 'pixel conversion');
    assert.equal(conv.clickId, clickId);
    const broken = await fetch(`${s.baseUrl}/pixel?token=nope`);
    assert.equal(broken.status, 200);
    assert.equal(broken.headers.get('content-type'), 'image/gif');
    // What was wrong is in the header, in the pixel's own words.
    const untokened = await fetch(`${s.baseUrl}/pixel?txn_id=px-0`);
    assert.equal(untokened.status, 200);
    assert.equal(untokened.headers.get('x-abp-conversion'), 'ignored; A valid pixel token is required (token=...)');
    const noClick = await fetch(`${s.baseUrl}/pixel?token=${org.pixelToken}&txn_id=px-0`);
    assert.match(noClick.headers.get('x-abp-conversion') ?? '', /^ignored; The pixel request is invalid: click_id is required: none in the query, and this browser has no click cookie of the organisation/);
    // A template's empty click_id (nothing to fill in on the page) leaves the click id to the cookie.
    const emptyParam = await fetch(`${s.baseUrl}/pixel?token=${org.pixelToken}&click_id=&txn_id=px-3&amount=2.00`, { headers: { cookie } });
    assert.match(emptyParam.headers.get('x-abp-conversion') ?? '', /^accepted/);
    // So does a placeholder left unfilled, or anything else that is no click id of ours.
    for (const [i, placeholder] of ['{click_id}', 'undefined', 'null'].entries()) {
      const unfilled = await fetch(`${s.baseUrl}/pixel?token=${org.pixelToken}&click_id=${encodeURIComponent(placeholder)}&txn_id=px-unfilled-${i}&amount=2.00`, { headers: { cookie } });
      assert.match(unfilled.headers.get('x-abp-conversion') ?? '', /^accepted/, placeholder);
      const unfilledId = /id=(\S+)/.exec(unfilled.headers.get('x-abp-conversion')!)![1]!;
      const credited = await eventually(async () => { const x = await api(`/conversions/${unfilledId}`); return x.status === 200 ? x.body : undefined; }, 'unfilled pixel conversion');
      assert.deepEqual([credited.clickId, credited.status], [clickId, 'pending'], placeholder);
    }
    // Even a body the framework could not parse: the pixel reads only its query string and cookie.
    const garbled = await fetch(`${s.baseUrl}/pixel?token=${org.pixelToken}&txn_id=px-2&amount=1.00`, {
      method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: '{"not json',
    });
    assert.equal(garbled.status, 200);
    assert.equal(garbled.headers.get('content-type'), 'image/gif');
    assert.match(garbled.headers.get('x-abp-conversion') ?? '', /^accepted/);
  });

  it("credits the pixel's sale to the organisation's own click after the visitor clicked another organisation's link", async () => {
    // A browser's cookie jar on the tracking domain, which every organisation's links share: a cookie set again
    // under the same name replaces the one before.
    const jar = new Map<string, string>();
    const visit = async (linkId: string) => {
      const r = await click(linkId);
      for (const c of r.res.headers.getSetCookie()) {
        const [pair] = c.split(';');
        const at = pair!.indexOf('=');
        jar.set(pair!.slice(0, at), pair!.slice(at + 1));
      }
      return r.clickId;
    };
    const other = await newOrg(s, 'other-advertiser@example.com');
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${other.orgId}${path}`, { auth: other.token, body });
    const otherCampaign = (await post('/campaigns', campaignBody())).body.id as string;
    const otherAffiliate = (await post('/affiliates', { name: 'O', email: 'o@example.com' })).body.id as string;
    const otherLink = (await post('/links', { campaignId: otherCampaign, affiliateId: otherAffiliate })).body.id as string;

    const ours = await visit(org.link);
    await visit(otherLink); // later, on the same tracking domain
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const px = await fetch(`${s.baseUrl}/pixel?token=${org.pixelToken}&txn_id=px-two-orgs&amount=5.00`, { headers: { cookie } });
    assert.match(px.headers.get('x-abp-conversion') ?? '', /^accepted/);
    const id = /id=(\S+)/.exec(px.headers.get('x-abp-conversion')!)![1]!;
    const conv = await eventually(async () => { const x = await api(`/conversions/${id}`); return x.status === 200 ? x.body : undefined; }, 'pixel conversion');
    // Pending (held for review: a sale within 3 s of its click), not rejected as another organisation's click.
    assert.deepEqual([conv.clickId, conv.status, conv.campaignId], [ours, 'pending', org.campaign]);
  });

  it('keeps the pixel token, which checkout pages show, away from the postback, and the postback token off pages', async () => {
    assert.notEqual(org.pixelToken, org.postbackToken);
    const { clickId } = await click(org.link);
    // Read from a checkout page, the pixel token does not open the postback (where any amount could be claimed).
    const forged = await s.call('GET', `/postback?${new URLSearchParams({ token: org.pixelToken, click_id: clickId, txn_id: 'px-forged', amount: '999.00' })}`);
    assert.equal(forged.status, 401);
    assert.match(forged.body.error.message, /^That is the organisation's pixel token: the postback takes its postback token/);
    // And the pixel refuses the postback token, so that it is never put in a page.
    const leaked = await fetch(`${s.baseUrl}/pixel?token=${org.postbackToken}&click_id=${encodeURIComponent(clickId)}&txn_id=px-leaked&amount=1.00`);
    assert.equal(leaked.headers.get('content-type'), 'image/gif');
    assert.match(leaked.headers.get('x-abp-conversion') ?? '', /^ignored; Unknown pixel token/);
    // Each rotates alone.
    const before = (await api('/postback-config')).body;
    const rotated = (await s.call('POST', `/v1/orgs/${org.id}/postback-config/rotate-pixel`, { auth: org.token })).body;
    assert.deepEqual([rotated.token === before.token, rotated.pixelToken === before.pixelToken], [true, false]);
    assert.match(rotated.pixelUrl, new RegExp(`/pixel\\?token=${rotated.pixelToken}&`));
    const old = await fetch(`${s.baseUrl}/pixel?token=${before.pixelToken}&click_id=${encodeURIComponent(clickId)}&txn_id=px-old&amount=1.00`);
    assert.match(old.headers.get('x-abp-conversion') ?? '', /^ignored/);
    org.pixelToken = rotated.pixelToken;
  });

  it('keeps pixels placed before pixel tokens existed recording, until the postback token is rotated', async () => {
    const legacy = await newOrg(s, 'legacy-pixel@example.com');
    const post = (path: string, body?: unknown) => s.call('POST', `/v1/orgs/${legacy.orgId}${path}`, { auth: legacy.token, body });
    const campaign = (await post('/campaigns', campaignBody())).body.id as string;
    const affiliate = (await post('/affiliates', { name: 'L', email: 'l@example.com' })).body.id as string;
    const link = (await post('/links', { campaignId: campaign, affiliateId: affiliate })).body.id as string;
    const token = (await s.call('GET', `/v1/orgs/${legacy.orgId}/postback-config`, { auth: legacy.token })).body.token as string;
    // The token's index entry as it was written before tokens had a kind.
    const { firestore } = await import('../functions/adapters/firestore');
    const { hashSecret } = await import('../functions/services/authentication');
    await firestore().doc(`postbackTokenIndex/${hashSecret(token)}`).set({ orgId: legacy.orgId });
    const { clickId } = await click(link);
    const pixel = async (t: string, txn: string) =>
      (await fetch(`${s.baseUrl}/pixel?token=${t}&click_id=${encodeURIComponent(clickId)}&txn_id=${txn}&amount=1.00`)).headers.get('x-abp-conversion') ?? '';
    assert.match(await pixel(token, 'legacy-1'), /^accepted/);
    await post('/postback-config/rotate');
    assert.match(await pixel(token, 'legacy-2'), /^ignored/);
  });
});

describe('workers', () => {
  it('change nothing when Pub/Sub delivers the same message twice', async () => {
    const { clickId } = await click(org.link, '?sub1=redelivered');
    const stored = await eventually(async () => { const r = await api(`/clicks/${clickId}`); return r.status === 200 ? r.body : undefined; }, 'click');
    const event = {
      type: 'click', eventId: clickId, orgId: org.id, linkId: org.link, campaignId: org.campaign, affiliateId: org.affiliate, occurredAt: stored.createdAt,
      sub1: 'redelivered', sub2: null, sub3: null, sub4: null, sub5: null, visitorHash: 'v', ipHash: 'i', ipPrefix: null, country: null,
      device: 'desktop', os: null, browser: null, referrer: null, isBot: false, botReason: null,
    };
    const push = { subscription: 'projects/p/subscriptions/s', message: { data: Buffer.from(JSON.stringify(event)).toString('base64'), messageId: 'redelivery-1', attributes: {} } };
    for (const worker of ['state-writer', 'analytics-writer']) {
      for (let i = 0; i < 2; i++) {
        const r = await fetch(`${s.baseUrl}/_push/${worker}/projects/${process.env.GOOGLE_CLOUD_PROJECT}/topics/tracking-events`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(push) });
        assert.ok(r.ok, `${worker}: ${r.status}`);
      }
    }
    const row = await eventually(async () => {
      const r = await api(`/reports?from=${since()}&to=${today()}&groupBy=sub1`);
      return r.body?.rows?.find((x: { sub1: string }) => x.sub1 === 'redelivered');
    }, 'report');
    assert.equal(row.clicks, 1);
  });

  it("keeps a click's document while its dead letter may still be replayed, so that a replay is not a second click", async () => {
    // docs/deploy.md: dead letters wait 31 days and are replayed by republishing them to the topic, which feeds both
    // workers. A 7-day campaign's click document must still be there to make the replay a repeat.
    const { OrgScope } = await import('../functions/services/tenancy');
    const at = Date.now() - 5_000;
    const ids = ['ttl-short-window', 'ttl-long-window'];
    for (const [i, days] of [7, 60].entries()) {
      const e = { ...clickEvent({ eventId: `clk_${ids[i]}`, linkId: org.link, campaignId: org.campaign, affiliateId: org.affiliate, at, sub1: ids[i]!, visitorHash: `v-${ids[i]}` }), attributionWindowDays: days };
      const r = await deliverToStateWorker(e, ids[i]!);
      assert.equal(r.ok, true, await r.text());
    }
    const expiry = async (id: string) => {
      const doc = await OrgScope.system(org.id, 'test').collection('clicks').doc(`clk_${id}`).get();
      return Math.round(((doc.get('expireAt') as { toMillis(): number }).toMillis() - at) / 86_400_000);
    };
    assert.deepEqual([await expiry(ids[0]!), await expiry(ids[1]!)], [33, 67], 'past the 31 days of dead letters; else the window plus 7 days');
  });

  it('records the rows delivered beside one the analytics store refuses, failing only that one', async () => {
    const { analyticsStore } = await import('../functions/adapters/analytics');
    const store = analyticsStore();
    const insert = store.insert.bind(store);
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const at = Date.now() - 60_000;
    const good = clickEvent({ eventId: mintClickId(secrets().clickSigningKey, org.link, at), linkId: org.link, campaignId: org.campaign, affiliateId: org.affiliate, at, sub1: 'beside-poison', visitorHash: 'bp' });
    const poison = clickEvent({ eventId: mintClickId(secrets().clickSigningKey, org.link, at + 1), linkId: org.link, campaignId: org.campaign, affiliateId: org.affiliate, at: at + 1, sub1: 'poison', visitorHash: 'bp2' });
    // As BigQuery's insertAll does by default: one invalid row refuses the whole request.
    store.insert = async (rows) => {
      if (rows.some((r) => r.event_id === poison.eventId)) throw new Error('invalid row in the request');
      return insert(rows);
    };
    try {
      const push = (e: object, id: string) => fetch(`${s.baseUrl}/_push/analytics-writer/projects/${process.env.GOOGLE_CLOUD_PROJECT}/topics/tracking-events`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ subscription: 'projects/p/subscriptions/s', message: { data: Buffer.from(JSON.stringify(e)).toString('base64'), messageId: id, attributes: {} } }),
      });
      const [g, p] = await Promise.all([push(good, 'beside-1'), push(poison, 'poison-1')]);
      assert.deepEqual([g.ok, p.ok], [true, false]);
    } finally {
      store.insert = insert;
    }
    const row = await eventually(async () => {
      const r = await api(`/reports?from=${since()}&to=${today()}&groupBy=sub1`);
      return r.body?.rows?.find((x: { sub1: string }) => x.sub1 === 'beside-poison');
    }, 'the good row');
    assert.equal(row.clicks, 1);
  });

  /**
   * An affiliate of its own with a link on the shared campaign (the organisation's plan has room for only so many
   * campaigns), and a minter of our signed click ids for that link.
   */
  async function ownAffiliateLink(name: string, email: string) {
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${org.id}${path}`, { auth: org.token, body });
    const campaignId = org.campaign;
    const affiliateId = (await post('/affiliates', { name, email })).body.id as string;
    const linkId = (await post('/links', { campaignId, affiliateId })).body.id as string;
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    return { campaignId, affiliateId, linkId, clickIdAt: (at: number) => mintClickId(secrets().clickSigningKey, linkId, at) };
  }

  it('counts a repeat click exactly an hour later as not unique in the live counters, as the report does', async () => {
    const { campaignId, affiliateId, linkId, clickIdAt } = await ownAffiliateLink('Hourly', 'hourly@example.com');
    const hour = 3_600_000;
    const t0 = Date.now() - 3 * hour;
    // One visitor: at t0, exactly an hour later (a repeat), and an hour and a millisecond after that (unique again).
    for (const [k, at] of [t0, t0 + hour, t0 + 2 * hour + 1].entries()) {
      const eventId = clickIdAt(at);
      const r = await deliverToStateWorker(clickEvent({ eventId, linkId, campaignId, affiliateId, at, sub1: 'hourly', visitorHash: 'hourly-visitor' }), `hourly-${k}`);
      assert.equal(r.ok, true);
    }
    const from = new Date(t0).toISOString().slice(0, 10);
    const stats = (await api(`/stats?from=${from}&to=${today()}&affiliateId=${affiliateId}`)).body.totals;
    // The report's rule (shared/analytics/report.ts): unique unless the visitor's previous click is at most an hour before.
    assert.deepEqual([stats.clicks, stats.uniqueClicks], [3, 2]);
  });

  it('decides unique clicks by the click before in time, also when Pub/Sub delivers an earlier click later', async () => {
    const { campaignId, affiliateId, linkId, clickIdAt } = await ownAffiliateLink('Late', 'late@example.com');
    const minute = 60_000;
    const t0 = Date.now() - 3 * 60 * minute;
    // 10:00:00, then 11:00:30 (unique when it arrives: an hour and a half minute after the only click seen),
    // then 10:59:30 arrives late: it is a repeat of 10:00:00, and 11:00:30 is now a repeat of it.
    const ids: string[] = [];
    for (const [k, at] of [t0, t0 + 60 * minute + minute / 2, t0 + 59 * minute + minute / 2].entries()) {
      ids.push(clickIdAt(at));
      const r = await deliverToStateWorker(clickEvent({ eventId: ids[k]!, linkId, campaignId, affiliateId, at, sub1: 'late', visitorHash: 'late-visitor' }), `late-${k}`);
      assert.equal(r.ok, true);
    }
    const from = new Date(t0).toISOString().slice(0, 10);
    const stats = (await api(`/stats?from=${from}&to=${today()}&affiliateId=${affiliateId}`)).body.totals;
    assert.deepEqual([stats.clicks, stats.uniqueClicks], [3, 1]);
    const flags = await Promise.all(ids.map(async (id) => (await api(`/clicks/${id}`)).body.unique));
    // As the report counts them from the analytics rows (shared/analytics/report.ts, tested in analytics.test.ts).
    assert.deepEqual(flags, [true, false, false]);

    // Later still: 50 min after a first click, arriving behind one 3 h 20 min after it (2.5 h late).
    const visit = async (k: number, at: number) => {
      const id = clickIdAt(at);
      assert.equal((await deliverToStateWorker(clickEvent({ eventId: id, linkId, campaignId, affiliateId, at, sub1: 'later', visitorHash: 'later-visitor' }), `later-${k}`)).ok, true);
      return id;
    };
    const t1 = Date.now() - 4 * 60 * minute;
    const later = [await visit(0, t1), await visit(1, t1 + 200 * minute), await visit(2, t1 + 50 * minute)];
    const laterFlags = await Promise.all(later.map(async (id) => (await api(`/clicks/${id}`)).body.unique));
    assert.deepEqual(laterFlags, [true, true, false]);
  });

  it('finds the click before a very late one (a dead letter replayed hours later) though the visitor no longer keeps it', async () => {
    const { campaignId, affiliateId, linkId, clickIdAt } = await ownAffiliateLink('Replayed', 'replayed@example.com');
    const minute = 60_000;
    const t0 = Date.now() - 20 * 60 * minute;
    const visit = async (k: number, at: number) => {
      const id = clickIdAt(at);
      assert.equal((await deliverToStateWorker(clickEvent({ eventId: id, linkId, campaignId, affiliateId, at, sub1: 'replayed', visitorHash: 'replayed-visitor' }), `replayed-${k}`)).ok, true);
      return id;
    };
    // 10:00, then 15:00 (the visitor keeps 4 hours of clicks: 10:00 is dropped), then 10:30 replayed from the
    // dead letters: 30 minutes after 10:00, a repeat, as the report counts it.
    const ids = [await visit(0, t0), await visit(1, t0 + 300 * minute), await visit(2, t0 + 30 * minute)];
    const flags = await Promise.all(ids.map(async (id) => (await api(`/clicks/${id}`)).body.unique));
    assert.deepEqual(flags, [true, true, false]);
    const { firestore } = await import('../functions/adapters/firestore');
    const visitor = await firestore().doc(`orgs/${org.id}/visitors/${linkId}_replayed-visitor`).get();
    // Kept while a dead letter may still be replayed (31 days), not a day.
    assert.ok(visitor.get('expireAt').toMillis() >= t0 + 300 * minute + 31 * 86_400_000, String(visitor.get('expireAt').toDate()));
  });

  it('write every click once, and one unique click per visitor, when many deliveries and redeliveries arrive at once', async (t) => {
    const redeliveredBefore = redeliveries.count;
    t.after(() => t.diagnostic(`deliveries answered 5xx and delivered again: ${redeliveries.count - redeliveredBefore}`));
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${org.id}${path}`, { auth: org.token, body });
    const campaignId = (await post('/campaigns', campaignBody({ name: 'Burst' }))).body.id as string;
    const linkId = (await post('/links', { campaignId, affiliateId: org.affiliate })).body.id as string;
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const t0 = Date.now() - 60_000;
    // 20 clicks by one visitor a second apart, 20 by 20 other visitors, and 5 bot clicks by the first visitor.
    const events = Array.from({ length: 45 }, (_, i) => {
      const at = t0 + i * 1000;
      return clickEvent({
        eventId: mintClickId(secrets().clickSigningKey, linkId, at), linkId, campaignId, affiliateId: org.affiliate, at, sub1: 'burst',
        visitorHash: i < 20 || i >= 40 ? 'burst-visitor' : `other-visitor-${i}`, ...(i >= 40 ? { bot: 'crawler' } : {}),
      });
    });
    const deliver = (e: (typeof events)[number], n: number) => deliverToStateWorker(e, `burst-${e.eventId}-${n}`, { redeliver: true });
    // Every message twice, all at once, newest first so that the order of arrival is not the order of clicks.
    const answers = await Promise.all([...events].reverse().flatMap((e) => [deliver(e, 1), deliver(e, 2)]));
    assert.deepEqual(answers.filter((r) => !r.ok).map((r) => r.status), []);

    const stats = (await api(`/stats?from=${new Date(t0).toISOString().slice(0, 10)}&to=${today()}&campaignId=${campaignId}`)).body.totals;
    assert.deepEqual({ clicks: stats.clicks, uniqueClicks: stats.uniqueClicks, botClicks: stats.botClicks }, { clicks: 40, uniqueClicks: 21, botClicks: 5 });
    const docs = await Promise.all(events.map(async (e) => (await api(`/clicks/${e.eventId}`)).body));
    // Which of the visitor's clicks is the unique one depends on arrival order; that exactly one is does not.
    assert.equal(docs.slice(0, 20).filter((d) => d.unique).length, 1);
    assert.ok(docs.slice(20, 40).every((d) => d.unique));
    assert.ok(docs.slice(40).every((d) => d.isBot && !d.unique));
  });

  it('book every conversion and commission once when many postback deliveries and redeliveries arrive at once', async (t) => {
    const redeliveredBefore = redeliveries.count;
    t.after(() => t.diagnostic(`deliveries answered 5xx and delivered again: ${redeliveries.count - redeliveredBefore}`));
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${org.id}${path}`, { auth: org.token, body });
    const campaignId = (await post('/campaigns', campaignBody({ name: 'Sale burst', payout: { type: 'cpa', amount: 300 } }))).body.id as string;
    const affiliateId = (await post('/affiliates', { name: 'Burst aff', email: 'burst@example.com' })).body.id as string;
    const linkId = (await post('/links', { campaignId, affiliateId })).body.id as string;
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const t0 = Date.now() - 120_000;
    const sale = (txnId: string, clickId: string) => postbackEvent({ orgId: org.id, txnId, clickId, amount: 2000 });
    // 12 sales on the link's clicks (one of them booked before the burst), 2 on forged click ids.
    const sales = Array.from({ length: 12 }, (_, i) => sale(`burst-sale-${i}`, mintClickId(secrets().clickSigningKey, linkId, t0 + i * 1000)));
    const forged = [0, 1].map((i) => sale(`burst-forged-${i}`, `${linkId}.${t0}.x${i}.forged`));
    const deliver = (e: { eventId: string }, n: number) => deliverToStateWorker(e, `sale-${n}-${e.eventId}`, { redeliver: true });
    assert.ok((await deliver(sales[0]!, 0)).ok);
    // Every message three times, all at once, in an order that is not the order of sales.
    const answers = await Promise.all([...sales, ...forged].reverse().flatMap((e) => [1, 2, 3].map((n) => deliver(e, n))));
    assert.deepEqual(answers.filter((r) => !r.ok).map((r) => r.status), []);

    const stats = (await api(`/stats?from=${since()}&to=${today()}&campaignId=${campaignId}`)).body.totals;
    assert.deepEqual({ conversions: stats.conversions, payout: stats.payout }, { conversions: 12, payout: { USD: 12 * 300 } });
    const ledger = (await api(`/affiliates/${affiliateId}/ledger?limit=200`)).body.items as { conversionId: string; amount: number; status: string }[];
    assert.deepEqual(ledger.map((l) => l.conversionId).sort(), sales.map((e) => e.eventId).sort(), 'one commission per sale');
    assert.ok(ledger.every((l) => l.amount === 300 && l.status === 'pending'));
    const docs = await Promise.all([...sales, ...forged].map(async (e) => (await api(`/conversions/${e.eventId}`)).body));
    assert.deepEqual(docs.map((d) => [d.status, d.reasons]), [...sales.map(() => ['pending', []]), ...forged.map(() => ['rejected', ['invalid_click_id']])]);
    assert.ok(docs.slice(0, 12).every((d) => d.campaignId === campaignId && d.affiliateId === affiliateId && d.linkId === linkId && d.payout === 300));
  });

  it('book postbacks handed over together in one commit, each on its own terms, and a second time change nothing', async () => {
    const { applyPostback } = await import('../functions/services/ingest-state');
    const { firestore } = await import('../functions/adapters/firestore');
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    // Organisations of their own: the plan's campaign limit, and counters nobody else moves.
    const mine = await newOrg(s, 'group-owner@example.com');
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${mine.orgId}${path}`, { auth: mine.token, body });
    const mineApi = (path: string) => s.call('GET', `/v1/orgs/${mine.orgId}${path}`, { auth: mine.token });
    const campaignId = (await post('/campaigns', campaignBody({ name: 'Group', payout: { type: 'cpa', amount: 300 } }))).body.id as string;
    const affiliateId = (await post('/affiliates', { name: 'Group aff', email: 'group@example.com' })).body.id as string;
    const linkId = (await post('/links', { campaignId, affiliateId })).body.id as string;
    const other = await newOrg(s, 'group-rival@example.com');
    const otherPost = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${other.orgId}${path}`, { auth: other.token, body });
    const oc = (await otherPost('/campaigns', campaignBody({ payout: { type: 'cpa', amount: 700 } }))).body.id as string;
    const oa = (await otherPost('/affiliates', { name: 'R', email: 'r2@example.com' })).body.id as string;
    const ol = (await otherPost('/links', { campaignId: oc, affiliateId: oa })).body.id as string;

    const key = secrets().clickSigningKey;
    const t0 = Date.now() - 600_000;
    const postback = (orgId: string, txnId: string, clickId: string) => postbackEvent({ orgId, txnId, clickId, amount: 2000 });
    const sales = [0, 1, 2, 3, 4].map((i) => postback(mine.orgId, `group-sale-${i}`, mintClickId(key, linkId, t0 + i * 1000)));
    const group = [
      ...sales,
      sales[0]!, // the same postback twice in one group
      postback(other.orgId, 'group-other-sale', mintClickId(key, ol, t0)), // another organisation's own sale
      postback(mine.orgId, 'group-forged', `${linkId}.${t0}.xx.forged`),
      postback(mine.orgId, 'group-unknown', mintClickId(key, 'nolinkhere02', t0)),
      postback(mine.orgId, 'group-foreign', mintClickId(key, ol, t0)),
      { ...postback(mine.orgId, 'group-unpreparable', mintClickId(key, linkId, t0)), eventId: 'not/a-document-id' },
    ];
    // Handed over in one turn of the event loop, as concurrent deliveries are: one group.
    const first = await Promise.allSettled(group.map((e) => applyPostback(e)));
    const outcome = (r: PromiseSettledResult<Awaited<ReturnType<typeof applyPostback>>>) =>
      r.status === 'rejected' ? 'failed' : r.value === null ? 'superseded' : [r.value.status, r.value.reasons.join(','), r.value.payout, r.value.campaignId];
    const expected = [
      ...sales.map(() => ['pending', '', 300, campaignId]),
      ['pending', '', 300, campaignId],
      ['pending', '', 700, oc],
      ['rejected', 'invalid_click_id', 0, null],
      ['rejected', 'unknown_click', 0, null],
      ['rejected', 'foreign_click', 0, null],
      'failed', // only the postback that could not be prepared fails, and only its own delivery
    ];
    assert.deepEqual(first.map(outcome), expected);

    const refs = group.slice(0, -1).map((e) => firestore().doc(`orgs/${e.orgId}/conversions/${e.eventId}`));
    const snaps = await firestore().getAll(...refs);
    assert.ok(snaps.every((d) => d.exists));
    assert.equal(new Set(snaps.map((d) => d.createTime!.toDate().toISOString() + d.createTime!.nanoseconds)).size, 1, 'one commit booked them all');

    const again = await Promise.allSettled(group.map((e) => applyPostback(e)));
    assert.deepEqual(again.map(outcome), expected);
    const stats = (await mineApi(`/stats?from=${since()}&to=${today()}&campaignId=${campaignId}`)).body.totals;
    assert.deepEqual({ conversions: stats.conversions, payout: stats.payout }, { conversions: 5, payout: { USD: 1500 } });
    const ledger = (await mineApi(`/affiliates/${affiliateId}/ledger?limit=200`)).body.items as { conversionId: string }[];
    assert.deepEqual(ledger.map((l) => l.conversionId).sort(), sales.map((e) => e.eventId).sort());
    const otherStats = (await s.call('GET', `/v1/orgs/${other.orgId}/stats?from=${since()}&to=${today()}`, { auth: other.token })).body.totals;
    assert.deepEqual({ conversions: otherStats.conversions, payout: otherStats.payout }, { conversions: 1, payout: { USD: 700 } });
  });

  it('sends a poison message to the dead-letter topic after 5 failed deliveries', async () => {
    await emulatorRest('topics/tracking-events:publish', { messages: [{ data: Buffer.from('not a tracking event').toString('base64'), attributes: { test: 'poison' } }] });
    const dead = await eventually(async () => {
      const r = await emulatorRest('subscriptions/tracking-events-dead-letter-inspection:pull', { maxMessages: 10, returnImmediately: true });
      return r.receivedMessages?.find((m: { message: { attributes: Record<string, string> } }) => m.message.attributes.test === 'poison');
    }, 'dead letter', 120_000);
    assert.equal(Buffer.from(dead.message.data, 'base64').toString(), 'not a tracking event');
    assert.equal(dead.message.attributes.CloudPubSubDeadLetterSourceDeliveryCount, '5');
  });
});

describe('the hot path\'s publisher', () => {
  // The click function waits for its publish; the grouped publisher sends each group with the client's
  // flush() rather than waiting out the client's batching window. Were flush() ever to stop sending (the
  // client is pinned; see functions/adapters/pubsub.ts), these publishes would wait for a window of ten
  // minutes and fail on the publisher's own 5 s deadline (checked: without the flush, this test fails so).
  it('gets a lone message and a burst acknowledged without waiting for the client\'s batching window', { timeout: 30_000 }, async () => {
    const { pubsub, groupedPublisher } = await import('../functions/adapters/pubsub');
    const [topic] = await pubsub().createTopic(`publisher-test-${Date.now()}`);
    const [subscription] = await topic.createSubscription(`${topic.name.split('/').pop()}-pull`);
    const publish = groupedPublisher(topic);
    topic.setPublishOptions({ batching: { maxMessages: 1000, maxMilliseconds: 600_000 } });
    const send = (n: number) => new Promise<string>((resolve, reject) =>
      publish({ data: Buffer.from(`message ${n}`), attributes: { n: String(n) } }, (r) => (r.status === 'fulfilled' ? resolve(r.value) : reject(r.reason as Error))));
    const lone = await send(0);
    const burst = await Promise.all(Array.from({ length: 30 }, (_, i) => send(i + 1)));
    assert.equal(new Set([lone, ...burst]).size, 31, 'every message got an id of its own');
    const got = new Set<string>();
    await eventually(async () => {
      const r = await emulatorRest(`subscriptions/${subscription.name.split('/').pop()}:pull`, { maxMessages: 100, returnImmediately: true });
      for (const m of r.receivedMessages ?? []) got.add(Buffer.from(m.message.data, 'base64').toString());
      return got.size >= 31 ? true : undefined;
    }, 'all 31 messages on the subscription');
    assert.deepEqual([...got].sort(), Array.from({ length: 31 }, (_, i) => `message ${i}`).sort());
    await subscription.delete();
    await topic.delete();
  });
});

// Last in this file: it deletes the tracking topic of this file's project.
describe('when Pub/Sub refuses', () => {
  it('answers 503 and does not send the visitor on untracked', async () => {
    const { topics } = await import('../shared/names');
    const topicUrl = `http://${process.env.PUBSUB_EMULATOR_HOST}/v1/projects/${process.env.GOOGLE_CLOUD_PROJECT}/topics/${topics.trackingEvents}`;
    assert.equal((await fetch(topicUrl, { method: 'DELETE' })).status, 200);
    const error = console.error;
    const logged: string[] = [];
    console.error = (...args: unknown[]) => void logged.push(String(args[0]));
    try {
      const { res } = await click(org.link, '?sub1=lost');
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('location'), null);
      assert.equal(res.headers.get('set-cookie'), null);
      assert.match(await res.text(), /retry/);
    } finally {
      console.error = error;
    }
    assert.ok(logged.some((l) => l.includes('click failed')), 'the failure is logged');
  });

  it("marks a booked sale's analytics version due when its publish fails, and the commissions job's sweep sends it", async () => {
    const { topics } = await import('../shared/names');
    const project = `http://${process.env.PUBSUB_EMULATOR_HOST}/v1/projects/${process.env.GOOGLE_CLOUD_PROJECT}`;
    await fetch(`${project}/topics/${topics.trackingEvents}`, { method: 'DELETE' }); // gone already if the test before ran
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const sale = postbackEvent({ orgId: org.id, txnId: 'unpublished-1', clickId: mintClickId(secrets().clickSigningKey, org.link, Date.now() - 60_000) });
    // Booked, but its analytics event cannot go out: the delivery fails, as each redelivery would.
    assert.equal((await deliverToStateWorker(sale, 'unpublished-1')).status >= 500, true);
    const { firestore } = await import('../functions/adapters/firestore');
    const doc = firestore().doc(`orgs/${org.id}/conversions/${sale.eventId}`);
    assert.deepEqual([(await doc.get()).get('status'), (await doc.get()).get('analyticsDue')], ['pending', true]);

    // Pub/Sub is back (a new topic, watched by a pull subscription of the test's own); the sweep sends it.
    assert.equal((await fetch(`${project}/topics/${topics.trackingEvents}`, { method: 'PUT' })).status, 200);
    const watch = `${project}/subscriptions/unpublished-watch`;
    assert.equal((await fetch(watch, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ topic: `projects/${process.env.GOOGLE_CLOUD_PROJECT}/topics/${topics.trackingEvents}` }) })).status, 200);
    const { publishDueConversionAnalytics } = await import('../functions/services/conversion-analytics');
    assert.ok((await publishDueConversionAnalytics(new Date())).published >= 1);
    const sent = await eventually(async () => {
      const pulled = (await (await fetch(`${watch}:pull`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ maxMessages: 100 }) })).json()) as { receivedMessages?: { message: { data: string } }[] };
      const events = (pulled.receivedMessages ?? []).map((m) => JSON.parse(Buffer.from(m.message.data, 'base64').toString()) as { conversionId?: string; status?: string });
      return events.find((e) => e.conversionId === sale.eventId);
    }, 'the swept conversion event');
    assert.equal(sent.status, 'pending');
    assert.equal((await doc.get()).get('analyticsDue'), undefined);
  });
});

describe('live counters under load', () => {
  /** An affiliate of its own on the org's campaign (counters nobody else moves), with a link and its click ids. */
  async function shardedLink(name: string, email: string) {
    const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${org.id}${path}`, { auth: org.token, body });
    const affiliate = (await post('/affiliates', { name, email })).body.id as string;
    const link = (await post('/links', { campaignId: org.campaign, affiliateId: affiliate })).body.id as string;
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const { firestore } = await import('../functions/adapters/firestore');
    const counters = async () => firestore().collection(`orgs/${org.id}/counters`).where('affiliateId', '==', affiliate).get();
    return { affiliate, link, clickIdAt: (at: number) => mintClickId(secrets().clickSigningKey, link, at), counters };
  }

  it('writes a counter once per commit of the state worker, on one shard, not once per click on every shard', async () => {
    const { affiliate, link, clickIdAt, counters: read } = await shardedLink('Sharded', 'sharded@example.com');
    const { applyClick } = await import('../functions/services/click-state');
    const at = Date.now() - 2 * 86_400_000;
    // Forty visitors' clicks on one link, handed to the state worker at once: it commits them together.
    const clicks = Array.from({ length: 40 }, (_, i) =>
      clickEvent({ eventId: clickIdAt(at + i), linkId: link, campaignId: org.campaign, affiliateId: affiliate, at: at + i, sub1: 'shard', visitorHash: `shard-visitor-${i}` }),
    );
    const applied = await Promise.all(clicks.map((c) => applyClick(c)));
    assert.ok(applied.every((a) => a.created));
    const counters = await read();
    // A shard per click would have spread the forty over (almost surely) all eight shards, each written by the commit.
    assert.ok(counters.size <= 4, `${counters.size} counter documents for one link's day (the worker commits at most 4 groups at once)`);
    assert.deepEqual([counters.docs.reduce((sum, d) => sum + (d.get('clicks') as number), 0), counters.docs.reduce((sum, d) => sum + (d.get('uniqueClicks') as number), 0)], [40, 40]);
  });

  it('writes a counter once per commit of the state worker for conversions too, on one shard', async () => {
    const { clickIdAt, counters: read } = await shardedLink('Sharded sales', 'sharded-sales@example.com');
    const { applyPostback } = await import('../functions/services/ingest-state');
    const at = Date.now() - 60 * 60_000;
    // Forty sales on one link, an hour after their clicks, handed to the state worker at once: it commits them together.
    const sales = Array.from({ length: 40 }, (_, i) =>
      postbackEvent({ orgId: org.id, txnId: `sharded-sale-${i}`, clickId: clickIdAt(at + i), amount: 2500 }),
    );
    const booked = await Promise.all(sales.map((e) => applyPostback(e)));
    assert.ok(booked.every((b) => b?.status === 'pending'), JSON.stringify(booked.map((b) => b?.reasons)));
    const counters = await read();
    assert.ok(counters.size <= 4, `${counters.size} counter documents for one link's day (the worker commits at most 4 groups at once)`);
    assert.equal(counters.docs.reduce((sum, d) => sum + (d.get('conversions') as number), 0), 40);
  });
});
