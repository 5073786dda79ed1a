import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import Stripe from 'stripe';
import { percentOf } from '../shared/domain/commission';
import { mulDivHalfEven } from '../shared/money';
import type { PayoutProvider } from '../functions/adapters/payouts';
import type { TestStack } from './helpers/stack';
import { moneyOrgs, startMoneyStack, connectWebhookSecret, webhookSecret, type MoneyOrg, type MoneyStack } from './helpers/money-org';
import { stripeError, type StripeStandIn } from './helpers/stripe-stand-in';
import { eventually } from './helpers/wait';

/**
 * The money flow through the real Firestore and Pub/Sub emulators: commissions booked by the pipeline,
 * approved by hand or by the hold period, paid by payout runs through Stripe (a local stand-in that answers
 * as Stripe's API does), with crashes, concurrent runs, reversals and webhooks.
 */
let money: MoneyStack;
let s: TestStack;
let stripe: StripeStandIn;
let setProvider: (p: PayoutProvider | undefined) => void;
let stripeProvider: PayoutProvider;

type Org = MoneyOrg;
const { setupOrg, addAffiliate, convert, patch, balance } = moneyOrgs(() => s);
const run = (org: Org, body: unknown = {}) => s.call('POST', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token, body });
const onboard = (org: Org, affiliate = org.affiliate) => s.call('POST', `/v1/orgs/${org.id}/affiliates/${affiliate}/stripe/onboarding`, { auth: org.token });

const setStatus = (org: Org, status: string) => s.call('PATCH', `/v1/orgs/${org.id}/affiliates/${org.affiliate}`, { auth: org.token, body: { status } });
const commissionsJob = async () => assert.equal((await fetch(`${s.baseUrl}/_jobs/commissions`, { method: 'POST' })).status, 200);
const transfersOf = (org: Org) => [...stripe.transfers.values()].filter((t) => (t.metadata as Record<string, string>).orgId === org.id).map((t) => t.amount);
async function onboarded(org: Org): Promise<void> {
  const onboarding = await onboard(org);
  stripe.completeOnboarding(onboarding.body.affiliate.stripeAccountId, { payoutsEnabled: true });
  await onboard(org);
}

before(async () => {
  money = await startMoneyStack();
  ({ s, stripe, stripeProvider, setProvider } = money);
});
beforeEach(() => setProvider(stripeProvider));
after(() => money.close());

describe('commission arithmetic', () => {
  it('rounds percentages half-to-even on minor units', () => {
    assert.deepEqual([percentOf(4999, 12.5), percentOf(100, 2.5), percentOf(100, 7.5), percentOf(1, 50), percentOf(3, 50), percentOf(0, 30)], [625, 2, 8, 0, 2, 0]);
    assert.deepEqual([mulDivHalfEven(-25, 1, 10), mulDivHalfEven(-35, 1, 10), mulDivHalfEven(Number.MAX_SAFE_INTEGER, 1, 1)], [-2, -4, Number.MAX_SAFE_INTEGER]);
  });
});

describe('conversion lifecycle', () => {
  it('approves, rejects and reverses with ledger entries, and refuses anything else with 409', async () => {
    const org = await setupOrg('life@example.com', { holdDays: 30 });
    const a = await convert(org, 'l-1');
    const b = await convert(org, 'l-2');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 1000, approved: 0, paid: 0, available: 0 });
    assert.equal((await patch(org, a, { status: 'approved' })).body.status, 'approved');
    assert.equal((await patch(org, a, { status: 'approved' })).status, 409);
    assert.equal((await patch(org, b, { status: 'rejected', reason: 'returned goods' })).body.status, 'rejected');
    assert.equal((await patch(org, b, { status: 'approved' })).status, 409);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 500, paid: 0, available: 500 });
    const reversed = await patch(org, a, { status: 'reversed', reason: 'chargeback' });
    assert.equal(reversed.body.status, 'reversed');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 0, available: 0 });
    assert.equal((await patch(org, a, { status: 'pending' })).status, 400);
    const log = await s.call('GET', `/v1/orgs/${org.id}/audit-log?targetId=${a}`, { auth: org.token });
    assert.deepEqual(log.body.items.map((e: { action: string }) => e.action), ['conversion.reverse', 'conversion.approve']);
  });

  it("sums an affiliate's balance per currency from its own entries, rejected and reversed counting nowhere", async () => {
    const org = await setupOrg('balance-sums@example.com', { holdDays: 30 });
    const other = (await addAffiliate(org, 'sums-other')).affiliate;
    const { firestore } = await import('../functions/adapters/firestore');
    const ledger = firestore().collection(`orgs/${org.id}/ledger`);
    const entries: [string, string, string, number][] = [
      ['USD', 'pending', 1000], ['USD', 'pending', 250], ['USD', 'approved', 500], ['USD', 'approved', -120], ['USD', 'claimed', 300],
      ['USD', 'paid', 4000], ['USD', 'rejected', 700], ['USD', 'reversed', 900], ['EUR', 'pending', 199], ['EUR', 'paid', 5], ['JPY', 'rejected', 50],
    ].map(([currency, status, amount]) => [org.affiliate, currency as string, status as string, amount as number]);
    // More entries than Firestore sums in one batch of index entries (1,000), and another affiliate's in the same currencies.
    for (let i = 0; i < 1050; i++) entries.push([org.affiliate, 'USD', 'paid', 1]);
    entries.push([other, 'USD', 'approved', 99_999], [other, 'GBP', 'pending', 1]);
    for (let i = 0; i < entries.length; i += 400) {
      const batch = firestore().batch();
      entries.slice(i, i + 400).forEach(([affiliateId, currency, status, amount], j) => batch.set(ledger.doc(`sums-${i + j}`), { affiliateId, currency, status, amount }));
      await batch.commit();
    }
    const r = await s.call('GET', `/v1/orgs/${org.id}/affiliates/${org.affiliate}/balance`, { auth: org.token });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, {
      affiliateId: org.affiliate,
      balances: [
        { currency: 'EUR', pending: 199, approved: 0, paid: 5, available: 0 },
        { currency: 'JPY', pending: 0, approved: 0, paid: 0, available: 0 },
        { currency: 'USD', pending: 1250, approved: 680, paid: 5050, available: 380 },
      ],
    });
    const none = await s.call('GET', `/v1/orgs/${org.id}/affiliates/${(await addAffiliate(org, 'sums-none')).affiliate}/balance`, { auth: org.token });
    assert.deepEqual(none.body.balances, []);
  });

  it('prices volume tiers at approval, without re-pricing the month\'s earlier conversions', async () => {
    const org = await setupOrg('tiers@example.com', { payout: { type: 'cpa', amount: 500, tiers: [{ minConversions: 3, amount: 700 }] }, holdDays: 30 });
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await convert(org, `t-${i}`));
    const payouts = [];
    for (const id of ids) payouts.push((await patch(org, id, { status: 'approved' })).body.payout);
    assert.deepEqual(payouts, [500, 500, 700, 700]);
    assert.equal((await balance(org)).available, 2400);
    const ledger = await s.call('GET', `/v1/orgs/${org.id}/affiliates/${org.affiliate}/ledger`, { auth: org.token });
    assert.deepEqual(ledger.body.items.filter((e: { type: string }) => e.type === 'tier_adjustment').map((e: { amount: number }) => e.amount), [200, 200]);
  });

  it("records an approval's analytics version after the booking's, even when the job's clock says the same instant", async () => {
    const org = await setupOrg('same-instant@example.com', { holdDays: 0 });
    const id = await convert(org, 'si-1');
    const { firestore } = await import('../functions/adapters/firestore');
    const ref = firestore().doc(`orgs/${org.id}/conversions/${id}`);
    const booked = (await ref.get()).get('analytics') as { recordedAt: string };
    // A job whose run started at the very instant the sale was booked (its hold ended then): the report takes the
    // version recorded last, so the approval must not tie with (or precede) the booking.
    const { approveDueConversions } = await import('../functions/services/commissions-job');
    await approveDueConversions(new Date(booked.recordedAt));
    const approved = (await ref.get()).get('analytics') as { status: string; recordedAt: string };
    assert.equal(approved.status, 'approved');
    assert.ok(Date.parse(approved.recordedAt) > Date.parse(booked.recordedAt), `${approved.recordedAt} after ${booked.recordedAt}`);
  });

  it('lets the commissions job approve conversions whose hold has ended, but not fraud-held ones', async () => {
    const org = await setupOrg('job@example.com', { holdDays: 0 });
    const due = await convert(org, 'j-1');
    const { mintClickId } = await import('../shared/domain/click-id');
    const { secrets } = await import('../functions/adapters/local-secrets');
    const fast = mintClickId(secrets().clickSigningKey, org.link, Date.now() + 1000); // "within 3 s" however slow the machine
    const held = (await s.call('GET', `/postback?${new URLSearchParams({ token: org.postbackToken, click_id: fast, txn_id: 'j-2', amount: '20.00' })}`)).body.conversionId;
    await eventually(async () => ((await s.call('GET', `/v1/orgs/${org.id}/conversions/${held}`, { auth: org.token })).status === 200 ? true : undefined), 'held');
    // Only the scheduler's POST runs a job: a GET (a prefetch, a crawler) changes nothing.
    const get = async (id: string) => (await s.call('GET', `/v1/orgs/${org.id}/conversions/${id}`, { auth: org.token })).body.status;
    assert.equal((await fetch(`${s.baseUrl}/_jobs/commissions`)).status, 405);
    assert.equal(await get(due), 'pending');
    const job = await fetch(`${s.baseUrl}/_jobs/commissions`, { method: 'POST' });
    assert.equal(job.status, 200);
    const result = (await job.json()) as { approved: number; analyticsPublished: number; analyticsFailed: number };
    assert.deepEqual([await get(due), await get(held)], ['approved', 'pending']);
    // Its approvals' analytics versions went out with it: none is left for the next sweep.
    assert.ok(result.analyticsPublished >= 1 && result.analyticsFailed === 0, JSON.stringify(result));
    const { firestore } = await import('../functions/adapters/firestore');
    const approved = await firestore().doc(`orgs/${org.id}/conversions/${due}`).get();
    assert.deepEqual([approved.get('analytics')?.status, approved.get('analyticsDue')], ['approved', undefined]);
  });
});

describe('payout runs', () => {
  it('lists the first 100 payouts of a large run with their count, and pages through all of them by runId', async () => {
    const org = await setupOrg('large-run@example.com');
    const first = await convert(org, 'lr-1');
    await patch(org, first, { status: 'approved' });
    // 129 more affiliates, each with the first one's approved commission copied: 130 payouts, blocked (no account).
    const { ledgerEntryId } = await import('../functions/services/conversion-lifecycle');
    const { firestore } = await import('../functions/adapters/firestore');
    const scope = money.system(org.id);
    const affiliate = (await scope.collection('affiliates').doc(org.affiliate).get()).data()!;
    const entry = (await scope.collection('ledger').doc(ledgerEntryId(first, 'commission')).get()).data()!;
    const batch = firestore().batch();
    for (let i = 1; i < 130; i++) {
      const id = `${org.affiliate}x${String(i).padStart(3, '0')}`;
      batch.set(scope.collection('affiliates').doc(id), { ...affiliate, id, email: `pat+${i}@large-run.example` });
      batch.set(scope.collection('ledger').doc(`led_large_run_${i}`), { ...entry, id: `led_large_run_${i}`, affiliateId: id, conversionId: `${first}x${i}` });
    }
    await batch.commit();
    const r = await run(org);
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.payoutCount, 130);
    assert.equal(r.body.payouts.length, 100);
    assert.ok(r.body.payouts.every((p: { status: string }) => p.status === 'blocked'));
    // The run records no list of ids (a run of tens of thousands would pass a document's 1 MiB), and reads the same later.
    assert.equal((await scope.collection('payoutRuns').doc(r.body.id).get()).get('payoutIds'), undefined);
    const again = await s.call('GET', `/v1/orgs/${org.id}/payout-runs/${r.body.id}`, { auth: org.token });
    assert.deepEqual([again.body.payoutCount, again.body.payouts], [130, r.body.payouts]);
    const all: string[] = [];
    for (let cursor: string | null = ''; cursor !== null;) {
      const page: { body: { items: { id: string }[]; nextCursor: string | null } } = await s.call('GET', `/v1/orgs/${org.id}/payouts?runId=${r.body.id}&limit=50${cursor ? `&cursor=${cursor}` : ''}`, { auth: org.token });
      all.push(...page.body.items.map((p) => p.id));
      cursor = page.body.nextCursor;
    }
    assert.equal(new Set(all).size, 130);
  });

  it('blocks affiliates without a payout account, then pays exactly the approved entries once onboarded', async () => {
    const org = await setupOrg('pay@example.com');
    const ids = [await convert(org, 'p-1', '10.00'), await convert(org, 'p-2', '10.00'), await convert(org, 'p-3')];
    for (const id of ids.slice(0, 2)) await patch(org, id, { status: 'approved' });
    const blocked = await run(org);
    assert.equal(blocked.status, 201);
    assert.deepEqual(blocked.body.payouts.map((p: { status: string; reason: string; amount: number }) => [p.status, p.reason, p.amount]), [['blocked', 'no_payout_account', 1000]]);
    assert.equal((await balance(org)).available, 1000, 'the money waits');
    const onboarding = await onboard(org);
    assert.equal(onboarding.status, 200);
    assert.match(onboarding.body.url, /^https?:\/\//);
    stripe.completeOnboarding(onboarding.body.affiliate.stripeAccountId, { payoutsEnabled: true });
    await onboard(org);
    const preview = await run(org, { dryRun: true });
    assert.deepEqual(preview.body.payouts.map((p: { status: string; amount: number }) => [p.status, p.amount]), [['would_pay', 1000]]);
    assert.equal(stripe.transfers.size, 0, 'a dry run moves nothing');
    const paid = await run(org);
    assert.deepEqual(paid.body.payouts.map((p: { status: string; amount: number; simulated: boolean }) => [p.status, p.amount, p.simulated]), [['paid', 1000, false]]);
    const transfer = [...stripe.transfers.values()].find((t) => (t.metadata as Record<string, string>).payoutId === paid.body.payouts[0].id)!;
    assert.deepEqual([transfer.amount, transfer.currency, transfer.destination, transfer.transfer_group], [1000, 'usd', onboarding.body.affiliate.stripeAccountId, paid.body.id]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 500, approved: 0, paid: 1000, available: 0 });
    const statement = await s.call('GET', `/v1/orgs/${org.id}/payouts/${paid.body.payouts[0].id}/statement`, { auth: org.token });
    assert.deepEqual(statement.body.entries.map((e: { conversionId: string }) => e.conversionId).sort(), ids.slice(0, 2).sort());
    const csv = await s.call('GET', `/v1/orgs/${org.id}/payouts/${paid.body.payouts[0].id}/statement?format=csv`, { auth: org.token });
    assert.match(csv.text, /^entryId,conversionId/);
    assert.equal((await s.call('GET', `/v1/orgs/${org.id}/conversions/${ids[0]}`, { auth: org.token })).body.status, 'paid');
    assert.deepEqual((await run(org)).body.payouts, [], 'nothing approved is left to pay');
  });

  it('transfers nothing to a blocked or paused affiliate, whose money stays available, and pays it once active again', async () => {
    const org = await setupOrg('blocked-run@example.com');
    await onboarded(org);
    const id = await convert(org, 'br-1');
    await patch(org, id, { status: 'approved' });
    assert.equal((await setStatus(org, 'blocked')).status, 200);
    const preview = await run(org, { dryRun: true });
    assert.deepEqual(preview.body.payouts.map((p: { status: string; reason: string }) => [p.status, p.reason]), [['blocked', 'affiliate_blocked']]);
    const blocked = await run(org);
    assert.deepEqual(blocked.body.payouts.map((p: { status: string; reason: string; amount: number }) => [p.status, p.reason, p.amount]), [['blocked', 'affiliate_blocked', 500]]);
    await setStatus(org, 'paused');
    assert.deepEqual((await run(org)).body.payouts.map((p: { status: string; reason: string }) => [p.status, p.reason]), [['blocked', 'affiliate_paused']]);
    assert.deepEqual(transfersOf(org), [], 'no transfer to an affiliate that is not active');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 500, paid: 0, available: 500 }, 'the money waits');
    await setStatus(org, 'active');
    assert.deepEqual((await run(org)).body.payouts.map((p: { status: string; amount: number }) => [p.status, p.amount]), [['paid', 500]]);
    assert.deepEqual((await run(org)).body.payouts, []);
    assert.deepEqual(transfersOf(org), [500]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
  });

  it('leaves a blocked affiliate\'s due conversions pending in the commissions job, and approves and pays them once active again', async () => {
    const org = await setupOrg('blocked-job@example.com', { holdDays: 0 });
    await onboarded(org);
    const id = await convert(org, 'bj-1');
    const conversion = async () => (await s.call('GET', `/v1/orgs/${org.id}/conversions/${id}`, { auth: org.token })).body.status;
    const { firestore } = await import('../functions/adapters/firestore');
    const setAside = async () => (await firestore().doc(`orgs/${org.id}/conversions/${id}`).get()).get('affiliateHeld') as boolean;
    const marker = firestore().doc(`heldAffiliates/${org.id}_${org.affiliate}`);
    // A marker whose release fails (here: one no organisation could have) must not stop the others' approvals.
    const broken = firestore().doc('heldAffiliates/broken-marker');
    await broken.set({ orgId: 'not/an-org', affiliateId: 'x', holds: 1 });
    assert.equal((await setStatus(org, 'blocked')).status, 200);
    await commissionsJob();
    assert.equal(await conversion(), 'pending', 'neither approved nor rejected');
    assert.equal(await setAside(), true, 'set aside, out of the next sweeps');
    assert.equal((await marker.get()).get('holds'), 1);
    await setStatus(org, 'paused');
    await commissionsJob();
    assert.equal(await conversion(), 'pending');
    // Not read again: a sweep that still found it would set it aside once more.
    assert.equal((await marker.get()).get('holds'), 1);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 500, approved: 0, paid: 0, available: 0 });
    await setStatus(org, 'active');
    await commissionsJob();
    assert.equal(await conversion(), 'approved');
    assert.equal(await setAside(), false);
    assert.equal((await marker.get()).exists, false, 'the affiliate is forgotten once its conversions are back');
    await broken.delete();
    assert.deepEqual((await run(org)).body.payouts.map((p: { status: string; amount: number }) => [p.status, p.amount]), [['paid', 500]]);
    assert.deepEqual((await run(org)).body.payouts, []);
    assert.deepEqual(transfersOf(org), [500]);
  });

  it('pays once when the run crashes after the transfer and before recording it, then runs again', async () => {
    const org = await setupOrg('crash@example.com');
    const id = await convert(org, 'c-1');
    await patch(org, id, { status: 'approved' });
    stripe.completeOnboarding((await onboard(org)).body.affiliate.stripeAccountId, { payoutsEnabled: true });
    await onboard(org);
    setProvider({ ...stripeProvider, kind: 'stripe', transfer: async (req) => { await stripeProvider.transfer(req); throw new Error('process killed after Stripe answered'); } });
    assert.equal((await run(org)).status, 500);
    const stuck = await s.call('GET', `/v1/orgs/${org.id}/payouts?affiliateId=${org.affiliate}`, { auth: org.token });
    assert.equal(stuck.body.items[0].status, 'claimed');
    setProvider(stripeProvider);
    const again = await run(org);
    assert.equal(again.status, 201);
    const payouts = (await s.call('GET', `/v1/orgs/${org.id}/payouts?affiliateId=${org.affiliate}`, { auth: org.token })).body.items;
    assert.deepEqual(payouts.map((p: { status: string; amount: number }) => [p.status, p.amount]), [['paid', 500]]);
    const transfers = [...stripe.transfers.values()].filter((t) => (t.metadata as Record<string, string>).orgId === org.id);
    assert.equal(transfers.length, 1, 'exactly one transfer');
    assert.ok(stripe.requests.some((r) => r.path === '/v1/transfers' && r.replayed), 'the second attempt was an idempotent replay');
  });

  it('returns the same run for a retry with the same Idempotency-Key, and starts no second one', async () => {
    const org = await setupOrg('idem-run@example.com');
    await patch(org, await convert(org, 'i-1'), { status: 'approved' });
    const once = (key: string, body: unknown = {}) => s.call('POST', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token, body, headers: { 'idempotency-key': key } });
    const first = await once('run-1');
    assert.equal(first.status, 201, first.text);
    assert.deepEqual(first.body.payouts.map((p: { status: string; amount: number }) => [p.status, p.amount]), [['blocked', 500]]);
    const retry = await once('run-1');
    assert.equal(retry.status, 201, retry.text);
    assert.deepEqual(retry.body, first.body, 'the first result, payouts included');
    const runs = (await s.call('GET', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token })).body.items;
    assert.deepEqual(runs.map((r: { id: string }) => r.id), [first.body.id], 'one run');
    assert.equal((await s.call('GET', `/v1/orgs/${org.id}/payouts`, { auth: org.token })).body.items.length, 1, 'one blocked payout for the money');
    // A dry run creates nothing, so the key does not bind it; another key is another run.
    assert.notEqual((await once('run-1', { dryRun: true })).body.id, first.body.id);
    assert.notEqual((await once('run-2')).body.id, first.body.id);
    assert.equal((await s.call('GET', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token })).body.items.length, 2);
    const op = (await s.call('GET', '/v1/openapi.json')).body.paths['/v1/orgs/{orgId}/payout-runs'].post;
    assert.ok(op.parameters.some((p: { name: string }) => p.name === 'Idempotency-Key'), 'documented');
  });

  it('finishes the same run when a retry with the same Idempotency-Key follows a crash, paying once', async () => {
    const org = await setupOrg('idem-crash@example.com');
    await patch(org, await convert(org, 'ic-1'), { status: 'approved' });
    stripe.completeOnboarding((await onboard(org)).body.affiliate.stripeAccountId, { payoutsEnabled: true });
    await onboard(org);
    const once = () => s.call('POST', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token, body: {}, headers: { 'idempotency-key': 'crash-1' } });
    setProvider({ ...stripeProvider, kind: 'stripe', transfer: async (req) => { await stripeProvider.transfer(req); throw new Error('process killed after Stripe answered'); } });
    assert.equal((await once()).status, 500);
    setProvider(stripeProvider);
    const retry = await once();
    assert.equal(retry.status, 201, retry.text);
    assert.equal(retry.body.status, 'completed');
    assert.deepEqual(retry.body.payouts.map((p: { status: string; amount: number }) => [p.status, p.amount]), [['paid', 500]], 'the payout the first attempt sent is the run\'s');
    const runs = (await s.call('GET', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token })).body.items;
    assert.deepEqual(runs.map((r: { id: string; status: string }) => [r.id, r.status]), [[retry.body.id, 'completed']]);
    assert.deepEqual((await once()).body, retry.body);
    assert.equal([...stripe.transfers.values()].filter((t) => (t.metadata as Record<string, string>).orgId === org.id).length, 1, 'exactly one transfer');
  });

  it('pays each affiliate once when two runs start at once', async () => {
    const org = await setupOrg('twice@example.com');
    const second = await addAffiliate(org, 'second');
    for (const [txn, link] of [['w-1', org.link], ['w-2', second.link], ['w-3', second.link]] as const) await patch(org, await convert(org, txn, '20.00', link), { status: 'approved' });
    for (const aff of [org.affiliate, second.affiliate]) {
      stripe.completeOnboarding((await onboard(org, aff)).body.affiliate.stripeAccountId, { payoutsEnabled: true });
      await onboard(org, aff);
    }
    const results = await Promise.all([run(org), run(org), run(org)]);
    // Whichever run holds the lease pays; the others are refused (409) or, if they start after it ends, find nothing left.
    for (const r of results) assert.ok(r.status === 409 || r.status === 201, `${r.status} ${r.text}`);
    const paidPayouts = results.flatMap((r) => (r.status === 201 ? r.body.payouts : [])).filter((p: { status: string }) => p.status === 'paid');
    assert.equal(paidPayouts.length, 2);
    const transfers = [...stripe.transfers.values()].filter((t) => (t.metadata as Record<string, string>).orgId === org.id);
    const byAffiliate = Object.fromEntries(transfers.map((t) => [(t.metadata as Record<string, string>).affiliateId, t.amount]));
    assert.deepEqual(byAffiliate, { [org.affiliate]: 500, [second.affiliate]: 1000 });
    assert.deepEqual((await run(org)).body.payouts, []);
  });

  it('fails one payout on a Stripe balance error without stopping the others, and returns its money', async () => {
    const org = await setupOrg('partial@example.com');
    const second = await addAffiliate(org, 'partial2');
    await patch(org, await convert(org, 'b-1'), { status: 'approved' });
    await patch(org, await convert(org, 'b-2', '20.00', second.link), { status: 'approved' });
    for (const aff of [org.affiliate, second.affiliate]) {
      stripe.completeOnboarding((await onboard(org, aff)).body.affiliate.stripeAccountId, { payoutsEnabled: true });
      await onboard(org, aff);
    }
    stripe.failNext('/v1/transfers', { status: 400, body: { error: { type: 'invalid_request_error', code: 'balance_insufficient', message: 'You have insufficient available funds in your Stripe account.' } } }, 1);
    const r = await run(org);
    const statuses = r.body.payouts.map((p: { status: string; reason: string | null }) => [p.status, p.reason]);
    assert.deepEqual(statuses.sort(), [['failed', 'balance_insufficient'], ['paid', null]].sort());
    const failed = r.body.payouts.find((p: { status: string }) => p.status === 'failed');
    assert.equal((await balance(org, failed.affiliateId)).available, 500, 'the money is back in the balance');
    const retry = await run(org);
    assert.deepEqual(retry.body.payouts.map((p: { status: string; amount: number }) => [p.status, p.amount]), [['paid', 500]]);
  });

  it('nets a reversal after payment off the next payout (clawback), to the cent', async () => {
    const org = await setupOrg('claw@example.com');
    stripe.completeOnboarding((await onboard(org)).body.affiliate.stripeAccountId, { payoutsEnabled: true });
    await onboard(org);
    const first = [await convert(org, 'k-1'), await convert(org, 'k-2'), await convert(org, 'k-3')];
    for (const id of first) await patch(org, id, { status: 'approved' });
    const run1 = await run(org);
    assert.equal(run1.body.payouts[0].amount, 1500);
    assert.equal((await patch(org, first[0]!, { status: 'reversed', reason: 'chargeback' })).body.status, 'reversed');
    assert.equal((await balance(org)).available, -500, 'a negative balance is carried forward');
    assert.deepEqual((await run(org)).body.payouts, [], 'nothing to pay while the net is negative');
    for (const txn of ['k-4', 'k-5']) await patch(org, await convert(org, txn), { status: 'approved' });
    const run3 = await run(org);
    assert.deepEqual(run3.body.payouts.map((p: { amount: number }) => p.amount), [500]);
    const transfers = [...stripe.transfers.values()].filter((t) => (t.metadata as Record<string, string>).orgId === org.id);
    const ledger = (await s.call('GET', `/v1/orgs/${org.id}/affiliates/${org.affiliate}/ledger?limit=200`, { auth: org.token })).body.items;
    const paidEntries = ledger.filter((e: { status: string }) => e.status === 'paid').reduce((sum: number, e: { amount: number }) => sum + e.amount, 0);
    assert.equal(transfers.reduce((sum, t) => sum + (t.amount as number), 0), paidEntries, 'transfers equal the entries they claimed');
    assert.equal(paidEntries, 2000);
  });
});

describe('scheduled payout runs', () => {
  it('runs on the organisation\'s day, once however often the scheduler fires', async () => {
    const org = await setupOrg('sched@example.com');
    stripe.completeOnboarding((await onboard(org)).body.affiliate.stripeAccountId, { payoutsEnabled: true });
    await onboard(org);
    await patch(org, await convert(org, 's-1'), { status: 'approved' });
    const isoWeekday = ((new Date().getUTCDay() + 6) % 7) + 1;
    const notToday = (isoWeekday % 7) + 1;
    await s.call('PATCH', `/v1/orgs/${org.id}`, { auth: org.token, body: { payoutSchedule: { frequency: 'weekly', day: notToday } } });
    await fetch(`${s.baseUrl}/_jobs/payouts`, { method: 'POST' });
    assert.equal((await s.call('GET', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token })).body.items.length, 0, 'not its day');
    const patched = await s.call('PATCH', `/v1/orgs/${org.id}`, { auth: org.token, body: { payoutSchedule: { frequency: 'weekly', day: isoWeekday } } });
    assert.deepEqual(patched.body.payoutSchedule, { frequency: 'weekly', day: isoWeekday });
    for (let i = 0; i < 2; i++) assert.equal((await fetch(`${s.baseUrl}/_jobs/payouts`, { method: 'POST' })).status, 200);
    const runs = (await s.call('GET', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token })).body.items;
    assert.deepEqual(runs.map((r: { trigger: string; status: string }) => [r.trigger, r.status]), [['schedule', 'completed']]);
    const detail = await s.call('GET', `/v1/orgs/${org.id}/payout-runs/${runs[0].id}`, { auth: org.token });
    assert.deepEqual(detail.body.payouts.map((p: { amount: number; status: string }) => [p.amount, p.status]), [[500, 'paid']]);
    assert.equal((await s.call('PATCH', `/v1/orgs/${org.id}`, { auth: org.token, body: { payoutSchedule: { frequency: 'monthly', day: 31 } } })).status, 400);
  });
});

describe('Stripe webhooks', () => {
  const stripeLib = new Stripe('sk_test_unused');
  const send = (payload: string, signature: string) => fetch(`${s.baseUrl}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body: payload });
  const signed = (payload: string) => stripeLib.webhooks.generateTestHeaderString({ payload, secret: webhookSecret });

  it('rejects a bad signature, applies account.updated once and ignores its replay', async () => {
    const org = await setupOrg('hook@example.com');
    const account = (await onboard(org)).body.affiliate.stripeAccountId as string;
    const affiliate = async () => (await s.call('GET', `/v1/orgs/${org.id}/affiliates/${org.affiliate}`, { auth: org.token })).body;
    assert.equal((await affiliate()).payoutsEnabled, false);
    // Stripe sends the event once the account has changed: read back on a tie with onboarding's read, it says so too.
    stripe.completeOnboarding(account, { payoutsEnabled: true });
    const payload = JSON.stringify({ id: 'evt_hook_1', object: 'event', type: 'account.updated', created: Math.floor(Date.now() / 1000), data: { object: { id: account, object: 'account', payouts_enabled: true } } });
    const bad = await send(payload, signed(payload).replace(/v1=[0-9a-f]{6}/, 'v1=000000'));
    assert.equal(bad.status, 400);
    assert.equal((await affiliate()).payoutsEnabled, false);
    const first = await send(payload, signed(payload));
    assert.deepEqual(await first.json(), { received: true, outcome: 'applied' });
    assert.equal((await affiliate()).payoutsEnabled, true);
    // A replay of the same event after we changed the account by other means changes nothing.
    await s.call('PATCH', `/v1/orgs/${org.id}/affiliates/${org.affiliate}`, { auth: org.token, body: { status: 'paused' } });
    const replay = await send(payload, signed(payload));
    assert.deepEqual(await replay.json(), { received: true, outcome: 'duplicate' });
  });

  it("sends the affiliate back to the app's own pages after onboarding, when it names them", async () => {
    const org = await setupOrg('onboarding-pages@example.com');
    const links = () => stripe.requests.filter((r) => r.path === '/v1/account_links').map((r) => [r.body.return_url, r.body.refresh_url]);
    const before = links().length;
    const ask = (body?: unknown) => s.call('POST', `/v1/orgs/${org.id}/affiliates/${org.affiliate}/stripe/onboarding`, { auth: org.token, body });
    assert.equal((await ask({ returnUrl: 'https://app.example.com/payouts/done', refreshUrl: 'https://app.example.com/payouts/again' })).status, 200);
    assert.equal((await ask({ returnUrl: 'https://app.example.com/payouts/done' })).status, 200);
    assert.equal((await ask()).status, 200, 'no body: the defaults');
    assert.deepEqual(links().slice(before), [
      ['https://app.example.com/payouts/done', 'https://app.example.com/payouts/again'],
      ['https://app.example.com/payouts/done', 'https://app.example.com/payouts/done'],
      [`${s.baseUrl}/v1/orgs/${org.id}/affiliates/${org.affiliate}`, `${s.baseUrl}/v1/orgs/${org.id}/affiliates/${org.affiliate}`],
    ]);
    const bad = await ask({ returnUrl: 'javascript:alert(1)' });
    assert.equal(bad.status, 400);
    assert.deepEqual(bad.body.error.details.map((d: { field: string }) => d.field), ['returnUrl']);
  });

  it('answers 400 naming the field when Stripe refuses a URL the caller sent, and 502 when it refuses the default', async () => {
    const org = await setupOrg('onboarding-refused-url@example.com');
    const ask = (body?: unknown) => s.call('POST', `/v1/orgs/${org.id}/affiliates/${org.affiliate}/stripe/onboarding`, { auth: org.token, body });
    const refuseUrl = (param: string) => {
      const { status, body } = stripeError(400, { type: 'invalid_request_error', code: 'url_invalid', param, message: 'The URL provided is invalid.' });
      stripe.failNext('/v1/account_links', { status, body });
    };
    const fields = (r: { body: { error: { details: { field: string }[] } } }) => r.body.error.details.map((d) => d.field);
    const returnUrl = 'https://app.example.com/payouts/done';
    refuseUrl('return_url');
    const r = await ask({ returnUrl });
    assert.equal(r.status, 400, r.text);
    assert.match(r.body.error.message, /Stripe refused returnUrl: The URL provided is invalid/);
    assert.deepEqual(fields(r), ['returnUrl']);
    refuseUrl('refresh_url');
    assert.deepEqual(fields(await ask({ returnUrl })), ['returnUrl'], 'refreshUrl defaulted to returnUrl');
    refuseUrl('refresh_url');
    assert.deepEqual(fields(await ask({ returnUrl, refreshUrl: 'https://app.example.com/payouts/again' })), ['refreshUrl']);
    refuseUrl('return_url');
    const byDefault = await ask();
    assert.equal(byDefault.status, 502, 'the default URL is the platform\'s to fix');
    assert.equal((await ask({ returnUrl })).status, 200);
  });

  it('keeps what onboarding read of the account over an older account.updated delivered late', async () => {
    const org = await setupOrg('late-account-event@example.com');
    const account = (await onboard(org)).body.affiliate.stripeAccountId as string;
    stripe.completeOnboarding(account, { payoutsEnabled: true });
    assert.equal((await onboard(org)).body.affiliate.payoutsEnabled, true);
    // Stripe sent this a minute before onboarding read the account; it arrives now.
    const late = JSON.stringify({ id: 'evt_late_1', object: 'event', type: 'account.updated', account, created: Math.floor(Date.now() / 1000) - 60, data: { object: { id: account, object: 'account', payouts_enabled: false } } });
    assert.deepEqual(await (await send(late, stripeLib.webhooks.generateTestHeaderString({ payload: late, secret: connectWebhookSecret }))).json(), { received: true, outcome: 'ignored' });
    assert.equal((await s.call('GET', `/v1/orgs/${org.id}/affiliates/${org.affiliate}`, { auth: org.token })).body.payoutsEnabled, true);
  });

  it("takes events from both of Stripe's endpoints, each signed with its own secret, and no other", async () => {
    const org = await setupOrg('two-endpoints@example.com');
    const account = (await onboard(org)).body.affiliate.stripeAccountId as string;
    stripe.completeOnboarding(account, { payoutsEnabled: true });
    // The connected accounts' endpoint: an event on the affiliate's account, as Stripe sends it there.
    const connect = JSON.stringify({ id: 'evt_connect_1', object: 'event', type: 'account.updated', account, created: Math.floor(Date.now() / 1000), data: { object: { id: account, object: 'account', payouts_enabled: true } } });
    const other = await send(connect, stripeLib.webhooks.generateTestHeaderString({ payload: connect, secret: 'whsec_someone_else' }));
    assert.equal(other.status, 400);
    const viaConnect = await send(connect, stripeLib.webhooks.generateTestHeaderString({ payload: connect, secret: connectWebhookSecret }));
    assert.deepEqual(await viaConnect.json(), { received: true, outcome: 'applied' });
    assert.equal((await s.call('GET', `/v1/orgs/${org.id}/affiliates/${org.affiliate}`, { auth: org.token })).body.payoutsEnabled, true);
    // The platform's endpoint: a reversal of one of its transfers (none of ours here: taken, and ignored).
    const platform = JSON.stringify({ id: 'evt_platform_1', object: 'event', type: 'transfer.reversed', created: Math.floor(Date.now() / 1000), data: { object: { id: 'tr_unknown', object: 'transfer', amount: 100, amount_reversed: 100, currency: 'usd', reversed: true, metadata: {} } } });
    const viaPlatform = await send(platform, signed(platform));
    assert.equal(viaPlatform.status, 200, await viaPlatform.clone().text());
  });

  it('returns a reversed transfer to the affiliate\'s balance', async () => {
    const org = await setupOrg('reversal@example.com');
    stripe.completeOnboarding((await onboard(org)).body.affiliate.stripeAccountId, { payoutsEnabled: true });
    await onboard(org);
    await patch(org, await convert(org, 'r-1'), { status: 'approved' });
    const paid = (await run(org)).body.payouts[0];
    assert.equal((await balance(org)).paid, 500);
    const payload = JSON.stringify({ id: 'evt_rev_1', object: 'event', type: 'transfer.reversed', created: Math.floor(Date.now() / 1000), data: { object: { id: paid.transferId, object: 'transfer', amount: 500, amount_reversed: 500, currency: 'usd', reversed: true, metadata: { orgId: org.id, payoutId: paid.id } } } });
    assert.equal((await send(payload, signed(payload))).status, 200);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 500, paid: 0, available: 500 });
    const payout = (await s.call('GET', `/v1/orgs/${org.id}/payouts?affiliateId=${org.affiliate}`, { auth: org.token })).body.items[0];
    assert.deepEqual([payout.status, payout.reason], ['reversed', 'transfer_reversed']);
  });
});

describe('local payouts without Stripe', () => {
  it('go through the dry-run provider and are marked simulated', async () => {
    setProvider(undefined); // no STRIPE_SECRET_KEY in this stack: the configured provider is the dry run
    const org = await setupOrg('offline@example.com');
    await patch(org, await convert(org, 'o-1'), { status: 'approved' });
    const onboarding = await onboard(org);
    assert.equal(onboarding.body.affiliate.payoutsEnabled, true);
    const r = await run(org);
    assert.deepEqual(r.body.payouts.map((p: { status: string; simulated: boolean; transferId: string }) => [p.status, p.simulated, p.transferId.startsWith('tr_sim')]), [['paid', true, true]]);
  });
});
