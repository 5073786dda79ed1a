import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { PostbackEvent } from '../shared/domain/events';
import { deterministicId } from '../shared/ids';
import { campaignBody, newOrg, startTestStack, type TestStack } from './helpers/stack';
import { eventually } from './helpers/wait';

/**
 * A checkout's pixel and the advertiser's postback for one sale (one txn_id, so one conversion id), sent at
 * the same moment: the pixel with the visitor's cookie, which may hold a click id that is not this
 * organisation's (all organisations share the tracking domain's cookie) or not a valid one at all, the
 * postback with the right click id. Whatever reaches the state worker first, and however its deliveries are
 * grouped, the sale ends booked on the right click, credited once, and counted once.
 */
let s: TestStack;
/** Another organisation, whose links give the foreign click ids. */
const rival = { link: '' };
const today = () => new Date().toISOString().slice(0, 10);
/** Where a query for what a test just sent starts: the day before, so a run across UTC midnight still finds it. */
const since = () => new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
const payout = 300;

interface Org { id: string; token: string; campaign: string; affiliate: string; link: string; postbackToken: string; pixelToken: string }

/** An organisation of its own per test: counters, ledger and report nobody else moves. */
async function setUpOrg(email: string): Promise<Org> {
  const o = await newOrg(s, email);
  const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${o.orgId}${path}`, { auth: o.token, body });
  const campaign = (await post('/campaigns', campaignBody({ payout: { type: 'cpa', amount: payout } }))).body.id as string;
  const affiliate = (await post('/affiliates', { name: 'Aff', email: `aff-${email}` })).body.id as string;
  const link = (await post('/links', { campaignId: campaign, affiliateId: affiliate })).body.id as string;
  const tokens = (await s.call('GET', `/v1/orgs/${o.orgId}/postback-config`, { auth: o.token })).body;
  return { id: o.orgId, token: o.token, campaign, affiliate, link, postbackToken: tokens.token, pixelToken: tokens.pixelToken };
}

async function clickIds(org: Org) {
  const { mintClickId } = await import('../shared/domain/click-id');
  const { secrets } = await import('../functions/adapters/local-secrets');
  const key = secrets().clickSigningKey;
  const clickedAt = Date.now() - 600_000; // not "too fast" for a sale
  const good = () => mintClickId(key, org.link, clickedAt);
  /** The three ways a click id is rejected for itself, in turn. */
  const bad = (round: number) => {
    const kind = (['foreign_click', 'invalid_click_id', 'unknown_click'] as const)[round % 3]!;
    const id = kind === 'foreign_click' ? mintClickId(key, rival.link, clickedAt)
      : kind === 'unknown_click' ? mintClickId(key, `nolink${String(round).padStart(6, '0')}`, clickedAt)
      : good().replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    return { kind, id };
  };
  return { good, bad };
}

/** A postback event as the intake publishes it (its id from the organisation and txn id). */
const postbackEvent = (o: { orgId: string; txnId: string; clickId: string; via: 'postback' | 'pixel'; occurredAt: string }): PostbackEvent => ({
  type: 'postback', eventId: deterministicId('cnv', o.orgId, 'txn', o.txnId), orgId: o.orgId, clickId: o.clickId, txnId: o.txnId, event: 'conversion',
  amount: 2000, currency: null, occurredAt: o.occurredAt, via: o.via,
});

/**
 * Hands an event to the state worker as a Pub/Sub push delivery would, bypassing the topic. A 5xx is delivered
 * again (a few times) as Pub/Sub would: on a slow machine a transaction may run out of attempts, and the
 * worker's answer to that is a retry. Counted in `redeliveries`, which the tests report.
 */
const redeliveries = { count: 0 };
async function deliverToStateWorker(event: object, messageId: string): Promise<Response> {
  for (let attempt = 1; ; attempt++) {
    const r = await fetch(`${s.baseUrl}/_push/state-writer/projects/${process.env.GOOGLE_CLOUD_PROJECT}/topics/tracking-events`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ subscription: 'projects/p/subscriptions/s', message: { data: Buffer.from(JSON.stringify(event)).toString('base64'), messageId, attributes: {} } }),
    });
    await r.arrayBuffer();
    if (r.status < 500 || attempt === 5) return r;
    redeliveries.count++;
  }
}

/**
 * Each sale's conversion pending on its right click with one commission entry, and the organisation's live
 * counters (and, with `report`, its report) counting each once.
 */
async function assertCreditedOnce(org: Org, sales: { txnId: string; good: string; bad: { kind: string; id: string } }[], opts: { report: boolean }) {
  const api = (path: string) => s.call('GET', `/v1/orgs/${org.id}${path}`, { auth: org.token });
  for (const sale of sales) {
    const id = deterministicId('cnv', org.id, 'txn', sale.txnId);
    // Through Pub/Sub the two requests' events may still be on their way: a while for the right click's to land.
    let conv: { [k: string]: unknown } | undefined;
    const deadline = Date.now() + 8_000;
    while (Date.now() < deadline) {
      const r = await api(`/conversions/${id}`);
      if (r.status === 200) conv = r.body;
      if (conv?.status === 'pending') break;
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.ok(conv, `conversion ${sale.txnId} booked`);
    assert.deepEqual(
      { txnId: conv.txnId, status: conv.status, clickId: conv.clickId, campaignId: conv.campaignId, payout: conv.payout, reasons: conv.reasons },
      { txnId: sale.txnId, status: 'pending', clickId: sale.good, campaignId: org.campaign, payout, reasons: [] },
      `${sale.txnId}, raced by a click id rejected as ${sale.bad.kind}`,
    );
  }
  const ledger = (await api(`/affiliates/${org.affiliate}/ledger?limit=200`)).body.items as { conversionId: string; type: string; amount: number }[];
  assert.deepEqual(
    ledger.map((l) => `${l.conversionId} ${l.type} ${l.amount}`).sort(),
    sales.map((sale) => `${deterministicId('cnv', org.id, 'txn', sale.txnId)} commission ${payout}`).sort(),
    'one commission entry per sale',
  );
  const stats = (await api(`/stats?from=${since()}&to=${today()}`)).body.totals;
  assert.deepEqual({ conversions: stats.conversions, payout: stats.payout }, { conversions: sales.length, payout: { USD: payout * sales.length } }, 'the live counters count each sale once');
  if (!opts.report) return;
  // The report counts each conversion as its latest version says: the re-booking's, never the rejection it replaced.
  const row = await eventually(async () => {
    const r = await api(`/reports?from=${since()}&to=${today()}&groupBy=campaign`);
    const x = r.body?.rows?.find((y: { campaign: string }) => y.campaign === org.campaign);
    return x?.conversions === sales.length ? x : undefined;
  }, `${sales.length} conversions in the report`, 15_000);
  assert.deepEqual(row.payout, { USD: payout * sales.length });
}

before(async () => {
  s = await startTestStack({ LINK_CACHE_TTL_SECONDS: '0' });
  const o = await newOrg(s, 'race-rival@example.com');
  const post = (path: string, body: unknown) => s.call('POST', `/v1/orgs/${o.orgId}${path}`, { auth: o.token, body });
  const campaign = (await post('/campaigns', campaignBody())).body.id as string;
  const affiliate = (await post('/affiliates', { name: 'R', email: 'race-rival-aff@example.com' })).body.id as string;
  rival.link = (await post('/links', { campaignId: campaign, affiliateId: affiliate })).body.id as string;
});
after(() => s.close());

describe('a pixel and a postback of one sale sent together', () => {
  it('book the sale on the postback\'s click when both reach the state worker at once, in either order', async (t) => {
    const redeliveredBefore = redeliveries.count;
    t.after(() => t.diagnostic(`deliveries answered 5xx and delivered again: ${redeliveries.count - redeliveredBefore}`));
    const org = await setUpOrg('race-worker@example.com');
    const ids = await clickIds(org);
    const now = Date.now();
    const sales = Array.from({ length: 12 }, (_, round) => {
      const txnId = `worker-race-${round}`;
      const good = ids.good();
      const bad = ids.bad(round);
      // The pixel's request reached the intake a moment after the postback's: its rejection, should it be
      // booked first, is the later of the two in time, and must still not be what the report counts.
      const events = [
        { event: postbackEvent({ orgId: org.id, txnId, clickId: good, via: 'postback', occurredAt: new Date(now).toISOString() }), messageId: `${txnId}-postback` },
        { event: postbackEvent({ orgId: org.id, txnId, clickId: bad.id, via: 'pixel', occurredAt: new Date(now + 50).toISOString() }), messageId: `${txnId}-pixel` },
      ];
      return { txnId, good, bad, events: round % 2 ? events.reverse() : events };
    });
    // Every pair at once, each in its own order: the deliveries reach the worker together, in groups.
    const answers = await Promise.all(sales.flatMap((sale) => sale.events.map((d) => deliverToStateWorker(d.event, d.messageId))));
    assert.deepEqual(answers.map((r) => r.status).filter((st) => st >= 300), [], 'every delivery acknowledged');
    await assertCreditedOnce(org, sales, { report: true });

    // Pub/Sub delivers every message once more, all at once: nothing changes.
    const again = await Promise.all(sales.flatMap((sale) => sale.events.map((d) => deliverToStateWorker(d.event, d.messageId))));
    assert.deepEqual(again.map((r) => r.status).filter((st) => st >= 300), [], 'every redelivery acknowledged');
    await assertCreditedOnce(org, sales, { report: true });
  });

  it('book the sale on the postback\'s click when both are in one group of the state worker, or in two', async () => {
    const { applyPostback } = await import('../functions/services/ingest-state');
    const org = await setUpOrg('race-group@example.com');
    const ids = await clickIds(org);
    const turn = () => new Promise((r) => setImmediate(r));
    const sales = Array.from({ length: 12 }, (_, round) => {
      const txnId = `group-race-${round}`;
      const good = ids.good();
      const bad = ids.bad(round);
      const at = new Date().toISOString();
      const pair = [postbackEvent({ orgId: org.id, txnId, clickId: good, via: 'postback', occurredAt: at }), postbackEvent({ orgId: org.id, txnId, clickId: bad.id, via: 'pixel', occurredAt: at })];
      return { txnId, good, bad, pair: round % 2 ? pair.reverse() : pair, separated: round % 4 >= 2 };
    });
    // Handed over in one turn of the event loop, as concurrent deliveries are (one group), or the second a turn
    // later (two groups, committed at the same time).
    const outcomes = await Promise.all(sales.map(async (sale) => {
      const first = applyPostback(sale.pair[0]!);
      if (sale.separated) await turn();
      return Promise.all([first, applyPostback(sale.pair[1]!)]);
    }));
    // The postback's delivery ends with the conversion booked on its click, whichever was handled first (the
    // pixel's, handled first, may end with its own rejection, which the postback's then replaces).
    assert.deepEqual(
      outcomes.map((pair, i) => pair.filter((c, k) => sales[i]!.pair[k]!.via === 'postback').map((c) => `${c?.status} ${c?.clickId === sales[i]!.good ? 'right' : 'wrong'} click`)),
      sales.map(() => ['pending right click']),
    );
    // The second delivery of a sale in the one group is booked after it, on its own: the group still commits
    // its other conversions in one batch (no failed batch for its neighbours to retry one by one).
    const { firestore } = await import('../functions/adapters/firestore');
    const together = await firestore().getAll(...sales.filter((sale) => !sale.separated).map((sale) => firestore().doc(`orgs/${org.id}/conversions/${sale.pair[0]!.eventId}`)));
    assert.equal(new Set(together.map((d) => `${d.createTime!.seconds}.${d.createTime!.nanoseconds}`)).size, 1, 'one commit created the group\'s conversions');
    await assertCreditedOnce(org, sales, { report: false });
    // The same deliveries again, together and in order: nothing changes.
    await Promise.all(sales.flatMap((sale) => sale.pair.map((e) => applyPostback(e))));
    for (const sale of sales) for (const e of sale.pair) await applyPostback(e);
    await assertCreditedOnce(org, sales, { report: false });
  });

  it('book the sale on the postback\'s click when /pixel and /postback are called at once, and tell the advertiser it was accepted', async () => {
    const { clickCookieName } = await import('../functions/tracking/http');
    const org = await setUpOrg('race-http@example.com');
    const clickCookie = clickCookieName(org.id);
    const ids = await clickIds(org);
    const postback = (sale: { txnId: string; good: string }) =>
      s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: sale.good, txn_id: sale.txnId, amount: '20.00' })}`);
    const pixel = async (sale: { txnId: string; bad: { id: string } }) => {
      const r = await fetch(`${s.baseUrl}/pixel?${new URLSearchParams({ token: org.pixelToken, txn_id: sale.txnId, amount: '20.00' })}`, { headers: { cookie: `${clickCookie}=${sale.bad.id}` } });
      await r.arrayBuffer();
      assert.equal(r.headers.get('content-type'), 'image/gif');
      return r.headers.get('x-abp-conversion') ?? '';
    };
    const sales = Array.from({ length: 12 }, (_, round) => ({ txnId: `http-race-${round}`, good: ids.good(), bad: ids.bad(round), pixelFirst: round % 2 === 0 }));
    const answers = await Promise.all(sales.map(async (sale) => {
      if (sale.pixelFirst) {
        const [px, pb] = await Promise.all([pixel(sale), postback(sale)]);
        return { px, pb };
      }
      const [pb, px] = await Promise.all([postback(sale), pixel(sale)]);
      return { px, pb };
    }));
    const conversionIds = sales.map((sale) => deterministicId('cnv', org.id, 'txn', sale.txnId));
    // The advertiser's server is told its sale was taken, not that it was a duplicate of the pixel's.
    assert.deepEqual(answers.map((a) => [a.pb.status, a.pb.body.status, a.pb.body.conversionId]), conversionIds.map((id) => [200, 'accepted', id]));
    assert.ok(answers.every((a, i) => a.px.endsWith(`id=${conversionIds[i]}`)), JSON.stringify(answers.map((a) => a.px)));
    await assertCreditedOnce(org, sales, { report: true });

    // Sent again, each is a duplicate and changes nothing.
    for (const sale of sales) {
      assert.equal((await postback(sale)).body.status, 'duplicate', `${sale.txnId}: the postback again`);
      assert.match(await pixel(sale), /^duplicate;/, `${sale.txnId}: the pixel again`);
    }
    await new Promise((r) => setTimeout(r, 1000)); // what they published reaches the workers
    await assertCreditedOnce(org, sales, { report: true });
  });

  it('answer each request by the click that will stand, whichever reached the intake and the state worker first', async () => {
    // The in-between moments the race above passes through at random, set up one at a time: a request's
    // receipt is written (as the intake does) while its event is still on its way to the state worker.
    const { firestore } = await import('../functions/adapters/firestore');
    const { clickCookieName } = await import('../functions/tracking/http');
    const org = await setUpOrg('race-answers@example.com');
    const clickCookie = clickCookieName(org.id);
    const ids = await clickIds(org);
    const conversionId = (txnId: string) => deterministicId('cnv', org.id, 'txn', txnId);
    const receipt = (txnId: string) => firestore().doc(`orgs/${org.id}/postbackReceipts/${conversionId(txnId)}`);
    const postback = async (txnId: string, clickId: string) =>
      (await s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: clickId, txn_id: txnId, amount: '20.00' })}`)).body.status as string;
    const pixel = async (txnId: string, clickId: string) => {
      const r = await fetch(`${s.baseUrl}/pixel?${new URLSearchParams({ token: org.pixelToken, txn_id: txnId, amount: '20.00' })}`, { headers: { cookie: `${clickCookie}=${clickId}` } });
      await r.arrayBuffer();
      return (r.headers.get('x-abp-conversion') ?? '').split(';')[0];
    };
    const sales: { txnId: string; good: string; bad: { kind: string; id: string } }[] = [];

    // The pixel's request came first, its conversion not booked yet: the postback with the right click id is
    // accepted (its event will book over the pixel's rejection).
    for (const round of [0, 1, 2]) {
      const sale = { txnId: `answers-pixel-first-${round}`, good: ids.good(), bad: ids.bad(round) };
      sales.push(sale);
      await receipt(sale.txnId).create({ at: new Date().toISOString(), via: 'pixel', clickId: sale.bad.id });
      assert.equal(await postback(sale.txnId, sale.good), 'accepted', `${sale.txnId}: the right click id`);
      assert.equal((await receipt(sale.txnId).get()).get('clickId'), sale.good);
      assert.equal(await postback(sale.txnId, sale.good), 'duplicate', `${sale.txnId}: the right click id again`);
      assert.equal(await pixel(sale.txnId, sale.bad.id), 'duplicate', `${sale.txnId}: the pixel again`);
    }

    // The postback's request came first, but the pixel's event was booked first (rejected for its click id):
    // the pixel is a duplicate and leaves the receipt to the postback's click, whose event then books over it.
    for (const round of [0, 1, 2]) {
      const sale = { txnId: `answers-postback-first-${round}`, good: ids.good(), bad: ids.bad(round) };
      sales.push(sale);
      // As the intake writes them: the receipt names the postback's request for its click, each event its request.
      const { withNamed } = await import('../shared/domain/receipt');
      await receipt(sale.txnId).create({ at: new Date().toISOString(), via: 'postback', clickId: sale.good, named: withNamed(undefined, sale.good, `in_pb_${round}`) });
      const at = new Date().toISOString();
      const pixelEvent = { ...postbackEvent({ orgId: org.id, txnId: sale.txnId, clickId: sale.bad.id, via: 'pixel', occurredAt: at }), intakeId: `in_px_${round}` };
      assert.equal((await deliverToStateWorker(pixelEvent, `${sale.txnId}-pixel`)).ok, true);
      const rejected = (await s.call('GET', `/v1/orgs/${org.id}/conversions/${conversionId(sale.txnId)}`, { auth: org.token })).body;
      assert.deepEqual([rejected.status, rejected.reasons], ['rejected', [sale.bad.kind]]);
      assert.equal(await pixel(sale.txnId, sale.bad.id), 'duplicate', `${sale.txnId}: the pixel`);
      assert.equal((await receipt(sale.txnId).get()).get('clickId'), sale.good, `${sale.txnId}: the receipt keeps the right click`);
      const postbackEventOf = { ...postbackEvent({ orgId: org.id, txnId: sale.txnId, clickId: sale.good, via: 'postback', occurredAt: at }), intakeId: `in_pb_${round}` };
      assert.equal((await deliverToStateWorker(postbackEventOf, `${sale.txnId}-postback`)).ok, true);
      assert.equal(await postback(sale.txnId, sale.good), 'duplicate', `${sale.txnId}: the postback again`);
      assert.equal(await pixel(sale.txnId, sale.bad.id), 'duplicate', `${sale.txnId}: the pixel again`);
    }
    await new Promise((r) => setTimeout(r, 1000)); // what the requests published reaches the workers
    await assertCreditedOnce(org, sales, { report: true });
  });
});

describe('a flood of clicks from one visitor on one link', () => {
  it('records every click at its first delivery, one of them unique, however many arrive at once', async () => {
    const org = await setUpOrg('race-flood@example.com');
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const key = secrets().clickSigningKey;
    // A bot with a browser's user agent, from one address: every click writes the same visitor document.
    const n = 300;
    const start = Date.now() - 60_000;
    const clicks = Array.from({ length: n }, (_, i) => {
      const at = start + i;
      return {
        type: 'click', eventId: mintClickId(key, org.link, at), orgId: org.id, linkId: org.link, campaignId: org.campaign, affiliateId: org.affiliate,
        occurredAt: new Date(at).toISOString(), attributionWindowDays: 30, sub1: 'flood', sub2: null, sub3: null, sub4: null, sub5: null,
        visitorHash: 'one-visitor-hash-000000', ipHash: 'one-ip-hash', ipPrefix: '198.18.0.0/24', country: null, device: 'desktop', os: null, browser: null,
        referrer: null, isBot: false, botReason: null,
      };
    });
    // Straight to the state worker, all at once, each once: a failed delivery would be Pub/Sub's to retry, and
    // after five the dead-letter topic's, counted in neither the live counters nor the stats.
    const answers = await Promise.all(clicks.map(async (c, i) => {
      const r = await fetch(`${s.baseUrl}/_push/state-writer/projects/${process.env.GOOGLE_CLOUD_PROJECT}/topics/tracking-events`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ subscription: 'projects/p/subscriptions/s', message: { data: Buffer.from(JSON.stringify(c)).toString('base64'), messageId: `flood-${i}`, attributes: {} } }),
      });
      await r.arrayBuffer();
      return r.status;
    }));
    assert.deepEqual(answers.filter((status) => status >= 300), [], 'every delivery handled the first time');
    const stats = (await s.call('GET', `/v1/orgs/${org.id}/stats?from=${since()}&to=${today()}`, { auth: org.token })).body.totals;
    assert.deepEqual([stats.clicks, stats.uniqueClicks], [n, 1]);
  });
});

describe('repeats of one sale with different amounts', () => {
  it('book the amount of the request answered accepted, even when a repeat answered duplicate reaches the state worker first', async () => {
    const org = await setUpOrg('race-amounts@example.com');
    const ids = await clickIds(org);
    const click = ids.good();
    const conversionId = deterministicId('cnv', org.id, 'txn', 'amounts-1');
    // As the intake leaves it once the first request (amount 20.00) has published and written its receipt; the
    // repeat (amount 999.00, same click) was answered duplicate, and its event is the first to be delivered.
    const { firestore } = await import('../functions/adapters/firestore');
    const { withNamed } = await import('../shared/domain/receipt');
    await firestore().doc(`orgs/${org.id}/postbackReceipts/${conversionId}`).create({ at: new Date().toISOString(), via: 'postback', clickId: click, named: withNamed(undefined, click, 'in_first') });
    const event = (intakeId: string, amount: number) => ({ ...postbackEvent({ orgId: org.id, txnId: 'amounts-1', clickId: click, via: 'postback', occurredAt: new Date().toISOString() }), amount, intakeId });
    const repeat = await deliverToStateWorker(event('in_repeat', 99_900), 'amounts-repeat');
    assert.equal(repeat.ok, true, 'handled: nothing to retry');
    const api = (path: string) => s.call('GET', `/v1/orgs/${org.id}${path}`, { auth: org.token });
    assert.equal((await api(`/conversions/${conversionId}`)).status, 404, 'the repeat booked nothing');
    assert.equal((await deliverToStateWorker(event('in_first', 2_000), 'amounts-first')).ok, true);
    assert.equal((await deliverToStateWorker(event('in_repeat', 99_900), 'amounts-repeat-again')).ok, true);
    const booked = (await api(`/conversions/${conversionId}`)).body;
    assert.deepEqual([booked.status, booked.amount, booked.clickId], ['pending', 2_000, click]);
  });

  it('answer duplicate to a request whose sale another request\'s event booked before either wrote the receipt', async () => {
    const org = await setUpOrg('race-amounts-early@example.com');
    const ids = await clickIds(org);
    const click = ids.good();
    const conversionId = deterministicId('cnv', org.id, 'txn', 'amounts-early');
    // The repeat's event is handled while the first request is still between its publish and its receipt.
    const early = { ...postbackEvent({ orgId: org.id, txnId: 'amounts-early', clickId: click, via: 'postback', occurredAt: new Date().toISOString() }), amount: 99_900, intakeId: 'in_early' };
    assert.equal((await deliverToStateWorker(early, 'amounts-early')).ok, true);
    const late = await s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: click, txn_id: 'amounts-early', amount: '10.00' })}`);
    assert.deepEqual([late.body.conversionId, late.body.status], [conversionId, 'duplicate'], 'told what happened: another request booked the sale');
    await new Promise((r) => setTimeout(r, 500)); // its event reaches the state worker, and books nothing
    const booked = (await s.call('GET', `/v1/orgs/${org.id}/conversions/${conversionId}`, { auth: org.token })).body;
    assert.deepEqual([booked.status, booked.amount], ['pending', 99_900]);
  });

  it('answer duplicate to a repeat of a click whose event re-booked the sale before its own request wrote the receipt', async () => {
    const org = await setUpOrg('race-amounts-rebooked@example.com');
    const ids = await clickIds(org);
    const [click, bad] = [ids.good(), ids.bad(1).id];
    const conversionId = deterministicId('cnv', org.id, 'txn', 'amounts-rebooked');
    const postback = (clickId: string, amount: string) => s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: clickId, txn_id: 'amounts-rebooked', amount })}`);
    const conversion = async (status: string) => eventually(async () => {
      const r = await s.call('GET', `/v1/orgs/${org.id}/conversions/${conversionId}`, { auth: org.token });
      return r.body?.status === status ? r.body : undefined;
    }, `conversion ${status}`);
    // A mistyped click first: booked rejected, and the receipt is that request's.
    assert.equal((await postback(bad, '20.00')).body.status, 'accepted');
    await conversion('rejected');
    // The right click's event re-books the sale before its request has reached the receipt...
    const early = { ...postbackEvent({ orgId: org.id, txnId: 'amounts-rebooked', clickId: click, via: 'postback', occurredAt: new Date().toISOString() }), amount: 2_000, intakeId: 'in_early' };
    assert.equal((await deliverToStateWorker(early, 'amounts-rebooked-early')).ok, true);
    assert.equal((await conversion('pending')).amount, 2_000);
    // ...so a repeat of that click, with another amount, is a duplicate and books nothing.
    assert.equal((await postback(click, '25.00')).body.status, 'duplicate');
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual([(await conversion('pending')).amount, (await conversion('pending')).clickId], [2_000, click]);
  });

  it('answer as booked for repeats of a bad click too: the request whose event was booked, not the first to ask', async () => {
    const org = await setUpOrg('race-amounts-bad@example.com');
    const ids = await clickIds(org);
    const [first, bad] = [ids.bad(1).id, ids.bad(4).id]; // two click ids that fail their signature
    const conversionId = deterministicId('cnv', org.id, 'txn', 'amounts-bad');
    const postback = (clickId: string, amount: string) => s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: clickId, txn_id: 'amounts-bad', amount })}`);
    // The first request's receipt, as the intake writes it; its event (rejected for its click either way) still on its way.
    const { firestore } = await import('../functions/adapters/firestore');
    const { withNamed } = await import('../shared/domain/receipt');
    await firestore().doc(`orgs/${org.id}/postbackReceipts/${conversionId}`).create({ at: new Date().toISOString(), via: 'postback', clickId: first, named: withNamed(undefined, first, 'in_first') });
    // A repeat naming another bad click: its event is booked (rejected) before its request reaches the receipt...
    const early = { ...postbackEvent({ orgId: org.id, txnId: 'amounts-bad', clickId: bad, via: 'postback', occurredAt: new Date().toISOString() }), amount: null, intakeId: 'in_booked' };
    assert.equal((await deliverToStateWorker(early, 'amounts-bad-early')).ok, true);
    // ...so another request naming that click is a duplicate: the booked one is not its.
    assert.equal((await postback(bad, '22.22')).body.status, 'duplicate');
    await new Promise((r) => setTimeout(r, 500));
    const booked = (await s.call('GET', `/v1/orgs/${org.id}/conversions/${conversionId}`, { auth: org.token })).body;
    assert.deepEqual([booked.status, booked.clickId, booked.amount], ['rejected', bad, null]);
  });

  it('through the intake: the receipt names the request answered accepted, and the sale carries its amount', async () => {
    const org = await setUpOrg('race-amounts-http@example.com');
    const ids = await clickIds(org);
    const postback = (txnId: string, click: string, amount: string) => s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: click, txn_id: txnId, amount })}`);
    const sales = Array.from({ length: 10 }, (_, i) => ({ txnId: `amounts-http-${i}`, click: ids.good() }));
    // Each sale sent twice at once with different amounts: whichever is answered accepted is the one booked.
    const answers = await Promise.all(sales.map(async (sale) => {
      const [a, b] = await Promise.all([postback(sale.txnId, sale.click, '10.00'), postback(sale.txnId, sale.click, '77.00')]);
      assert.deepEqual([a.body.status, b.body.status].sort(), ['accepted', 'duplicate'], sale.txnId);
      return a.body.status === 'accepted' ? 1_000 : 7_700;
    }));
    for (const [i, sale] of sales.entries()) {
      const id = deterministicId('cnv', org.id, 'txn', sale.txnId);
      const booked = await eventually(async () => {
        const r = await s.call('GET', `/v1/orgs/${org.id}/conversions/${id}`, { auth: org.token });
        return r.status === 200 ? r.body : undefined;
      }, `${sale.txnId} booked`);
      assert.equal(booked.amount, answers[i], `${sale.txnId}: the accepted request's amount`);
    }
  });
});

describe("another organisation's click ids naming a sale", () => {
  it('never re-book a sale rejected for a foreign click, nor grow its receipt: its own click still books it', async () => {
    const org = await setUpOrg('race-foreign-churn@example.com');
    const ids = await clickIds(org);
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const { firestore } = await import('../functions/adapters/firestore');
    // Anyone with an organisation of their own mints as many of these as they like (here the rival's link).
    const foreignIds = Array.from({ length: 10 }, () => mintClickId(secrets().clickSigningKey, rival.link, Date.now() - 600_000));
    const foreign = (n: number) => foreignIds[n]!;
    const conversionId = deterministicId('cnv', org.id, 'txn', 'foreign-churn');
    const pixel = (clickId: string) => s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: clickId, txn_id: 'foreign-churn', amount: '20.00' })}`);
    const conversion = async () => (await s.call('GET', `/v1/orgs/${org.id}/conversions/${conversionId}`, { auth: org.token })).body;
    assert.equal((await pixel(foreign(0))).body.status, 'accepted');
    await eventually(async () => ((await conversion()).status === 'rejected' ? true : undefined), 'booked as rejected');
    assert.deepEqual((await conversion()).reasons, ['foreign_click']);
    for (let n = 1; n <= 5; n++) assert.equal((await pixel(foreign(n))).body.status, 'duplicate', `foreign click ${n}`);
    // The state worker is handed another such event directly, as a delivery of one published would be.
    const churn = { ...postbackEvent({ orgId: org.id, txnId: 'foreign-churn', clickId: foreign(9), via: 'pixel', occurredAt: new Date().toISOString() }), intakeId: 'in_churn' };
    assert.equal((await deliverToStateWorker(churn, 'foreign-churn-direct')).ok, true);
    await new Promise((r) => setTimeout(r, 500)); // the intake's events too
    assert.equal((await conversion()).clickId, foreign(0), 'not re-booked under another foreign click');
    const receipt = await firestore().doc(`orgs/${org.id}/postbackReceipts/${conversionId}`).get();
    assert.equal(Object.keys(receipt.get('named') as object).length, 1, 'the receipt names one click');
    // The advertiser's postback with the organisation's own click books the sale.
    const good = ids.good();
    assert.equal((await pixel(good)).body.status, 'accepted');
    const booked = await eventually(async () => {
      const c = await conversion();
      return c.status === 'pending' ? c : undefined;
    }, 'booked on its own click');
    assert.deepEqual([booked.clickId, booked.payout, booked.reasons], [good, payout, []]);
  });
});
