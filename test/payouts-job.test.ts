import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { PayoutProvider } from '../functions/adapters/payouts';
import type { OrgScope } from '../functions/services/tenancy';
import type { TestStack } from './helpers/stack';
import { gatedFirstTransfer, moneyOrgs, startMoneyStack, type MoneyOrg, type MoneyStack } from './helpers/money-org';
import type { StandInRequest, StripeStandIn } from './helpers/stripe-stand-in';

/**
 * The hourly payouts job and the payouts runs keep for a retryable failure (a 429, a lost answer): the next tick
 * finishes them whatever the organisation's schedule, once, under the payout's own idempotency key, and plans
 * nothing off-schedule. Through the real emulators and the Stripe stand-in.
 */
let money: MoneyStack;
let s: TestStack;
let stripe: StripeStandIn;
let setProvider: (p: PayoutProvider | undefined) => void;
let stripeProvider: PayoutProvider;
let runPayouts: typeof import('../functions/services/payout-runs').runPayouts;
let tick: typeof import('../functions/services/payouts-job').runDueScheduledPayouts;
let system: (orgId: string) => OrgScope;

type Org = MoneyOrg;
type Row = Record<string, unknown>;
const orgs = moneyOrgs(() => s);
const { setupOrg, balance, approved } = orgs;
const rateLimit = { status: 429, body: { error: { type: 'invalid_request_error', code: 'rate_limit', message: 'Too many requests hit the API too quickly.' } } };

const onboard = (org: Org) => orgs.onboard(org, stripe);
/** An organisation whose onboarded affiliate has one approved commission (500), ready for a payout run. */
const payableOrg = async (email: string, txn: string): Promise<{ org: Org; conversion: string }> => {
  const org = await setupOrg(email);
  const conversion = await approved(org, txn);
  await onboard(org);
  return { org, conversion };
};
const isoWeekday = (d: Date) => ((d.getUTCDay() + 6) % 7) + 1;
/** Three days after `d`'s weekday: not due on `d`, nor on the day after (the first test ticks on both). */
const notDueOn = (d: Date) => ((isoWeekday(d) + 2) % 7) + 1;
const weekly = async (org: Org, day: number) =>
  assert.equal((await s.call('PATCH', `/v1/orgs/${org.id}`, { auth: org.token, body: { payoutSchedule: { frequency: 'weekly', day } } })).status, 200);
const conversionStatus = async (org: Org, id: string) => (await s.call('GET', `/v1/orgs/${org.id}/conversions/${id}`, { auth: org.token })).body.status;

const meta = (t: Row) => t.metadata as Record<string, string>;
const transfersOf = (org: Org) => [...stripe.transfers.values()].filter((t) => meta(t).orgId === org.id);
const onlyTransfer = (org: Org) => {
  const all = transfersOf(org);
  assert.equal(all.length, 1, 'exactly one transfer');
  return all[0]!;
};
/** Every transfer request sent for the organisation, made, refused or replayed. */
const transferRequests = (org: Org): StandInRequest[] =>
  stripe.requests.filter((r) => r.method === 'POST' && r.path === '/v1/transfers' && (r.body.metadata as Record<string, string> | undefined)?.orgId === org.id);
const payouts = async (org: Org): Promise<Row[]> => (await system(org.id).collection('payouts').get()).docs.map((d) => d.data());
const runCount = async (org: Org) => (await system(org.id).collection('payoutRuns').get()).size;
const entryStatuses = async (org: Org, payoutId: string) =>
  (await system(org.id).collection('ledger').where('payoutId', '==', payoutId).get()).docs.map((d) => d.get('status') as string);

/** A manual run whose transfer Stripe rate limits: the payout keeps its claim for the same key. */
async function keptAfter429(org: Org): Promise<Row> {
  stripe.failNext('/v1/transfers', rateLimit);
  const run = await runPayouts(system(org.id), { trigger: 'manual' });
  assert.deepEqual(run.payouts.map((p) => [p.status, p.reason]), [['claimed', 'rate_limited']]);
  assert.equal(transfersOf(org).length, 0);
  return (await payouts(org))[0]!;
}

before(async () => {
  money = await startMoneyStack();
  ({ s, stripe, stripeProvider, setProvider, system, runPayouts } = money);
  tick = (await import('../functions/services/payouts-job')).runDueScheduledPayouts;
});
beforeEach(() => setProvider(stripeProvider));
after(() => money.close());

describe('the hourly payouts job and payouts kept for a retryable failure', () => {
  it('pays a payout its scheduled run kept after a 429 on the next tick of a day the schedule is not due, once, under the same key', async () => {
    const { org, conversion } = await payableOrg('kept-429@example.com', 'k4-1');
    const today = new Date();
    await weekly(org, isoWeekday(today));
    stripe.failNext('/v1/transfers', rateLimit);
    await tick(today);
    const [kept] = await payouts(org);
    assert.deepEqual([kept!.status, kept!.reason, transfersOf(org).length], ['claimed', 'rate_limited', 0]);
    // Approved after the run: it waits for the next scheduled run, not for this tick.
    await approved(org, 'k4-2');

    const tomorrow = new Date(today.getTime() + 86_400_000);
    const r = await tick(tomorrow);
    assert.deepEqual(r.runs, [], 'no organisation is due tomorrow');
    const transfer = onlyTransfer(org);
    assert.deepEqual([transfer.amount, meta(transfer).payoutId, transfer.transfer_group], [500, kept!.id, kept!.runId]);
    assert.deepEqual(transferRequests(org).map((q) => q.headers['idempotency-key']), [kept!.id, kept!.id], 'the 429 and the resend, under the payout id');
    const paid = (await payouts(org))[0]!;
    assert.deepEqual([paid.id, paid.status, paid.transferId], [kept!.id, 'paid', transfer.id]);
    assert.deepEqual(await entryStatuses(org, kept!.id as string), ['paid']);
    assert.equal(await conversionStatus(org, conversion), 'paid');
    assert.deepEqual(r.finished.find((f) => f.orgId === org.id)?.payouts.map((p) => [p.id, p.status]), [[kept!.id, 'paid']]);
    assert.deepEqual([(await payouts(org)).length, await runCount(org)], [1, 1], 'no payout planned, no run made off-schedule');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 500, paid: 500, available: 500 });

    // The scheduler firing again in the same hour: nothing is left, so nothing is sent.
    const again = await tick(tomorrow);
    assert.equal(transferRequests(org).length, 2);
    assert.equal(again.finished.some((f) => f.orgId === org.id), false);
  });

  it('does not send a kept payout while its affiliate is blocked, and sends it once the affiliate is active again', async () => {
    const { org } = await payableOrg('kept-blocked@example.com', 'kb-1');
    const kept = await keptAfter429(org);
    const setStatus = async (status: string) =>
      assert.equal((await s.call('PATCH', `/v1/orgs/${org.id}/affiliates/${org.affiliate}`, { auth: org.token, body: { status } })).status, 200);
    await setStatus('blocked');
    const r = await tick(new Date());
    assert.equal(transfersOf(org).length, 0, 'a blocked affiliate is not paid');
    assert.equal(transferRequests(org).length, 1, 'only the rate-limited request was ever sent');
    const held = (await payouts(org))[0]!;
    assert.deepEqual([held.id, held.status, held.reason], [kept.id, 'claimed', 'affiliate_blocked'], 'claim kept, saying why');
    assert.deepEqual(r.finished.find((f) => f.orgId === org.id)?.payouts.map((p) => [p.status, p.reason]), [['claimed', 'affiliate_blocked']]);

    await setStatus('active');
    await tick(new Date());
    const transfer = onlyTransfer(org);
    assert.deepEqual([transfer.amount, meta(transfer).payoutId], [500, kept.id]);
    const paid = (await payouts(org))[0]!;
    assert.deepEqual([paid.status, paid.transferId], ['paid', transfer.id]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
  });

  it('sends again on the next tick of the same day a payout the day\'s completed scheduled run kept', async () => {
    const { org } = await payableOrg('kept-same-day@example.com', 'ksd-1');
    const today = new Date();
    await weekly(org, isoWeekday(today));
    stripe.failNext('/v1/transfers', rateLimit);
    await tick(today);
    const [kept] = await payouts(org);
    assert.deepEqual([kept!.status, kept!.reason], ['claimed', 'rate_limited']);
    const run = (await system(org.id).collection('payoutRuns').doc(kept!.runId as string).get()).data()!;
    assert.equal(run.status, 'completed', 'the day\'s run is done: running it again returns at once');

    const endOfDay = Date.parse(`${today.toISOString().slice(0, 10)}T23:59:59.999Z`);
    await tick(new Date(Math.min(today.getTime() + 3_600_000, endOfDay)));
    const paid = (await payouts(org))[0]!;
    assert.deepEqual([paid.status, paid.transferId], ['paid', onlyTransfer(org).id]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
  });

  it('finishes a kept payout of an organisation without a schedule, and plans nothing for one whose schedule is not due', async () => {
    const { org: kept } = await payableOrg('kept-manual@example.com', 'km-1');
    // Stripe made the transfer, but its answer was lost: the resend must meet the same transfer, not make one.
    setProvider({ ...stripeProvider, transfer: async (req) => {
      await stripeProvider.transfer(req);
      return { ok: false, reason: 'indeterminate', message: 'socket hang up after Stripe made the transfer', retryable: true };
    } });
    const first = await runPayouts(system(kept.id), { trigger: 'manual' });
    assert.deepEqual(first.payouts.map((p) => [p.status, p.reason]), [['claimed', 'indeterminate']]);
    setProvider(stripeProvider);

    const { org: idle } = await payableOrg('nothing-kept@example.com', 'nk-1');
    const now = new Date();
    await weekly(idle, notDueOn(now));

    const r = await tick(now);
    const transfer = onlyTransfer(kept);
    assert.deepEqual((await payouts(kept)).map((p) => [p.id, p.status, p.transferId]), [[first.payouts[0]!.id, 'paid', transfer.id]]);
    assert.deepEqual(transferRequests(kept).map((q) => q.replayed), [false, true], 'the resend was answered from the idempotency layer');
    assert.deepEqual(await balance(kept), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
    assert.equal(r.finished.some((f) => f.orgId === idle.id), false, 'nothing kept there, nothing to finish');
    assert.deepEqual([await payouts(idle), await runCount(idle), transferRequests(idle).length], [[], 0, 0], 'nothing planned off-schedule');
    assert.deepEqual(await balance(idle), { currency: 'USD', pending: 0, approved: 500, paid: 0, available: 500 });

    // A tick with nothing kept anywhere sends nothing and plans nothing.
    const before = stripe.requests.length;
    const quiet = await tick(now);
    assert.deepEqual([quiet.finished, quiet.busy, stripe.requests.length], [[], [], before]);
    assert.deepEqual([await payouts(idle), await runCount(idle)], [[], 0]);
  });

  it("applies a reversal left parked on a settled payout of an organisation with nothing unsettled and no schedule", async () => {
    const { org, conversion } = await payableOrg('parked-left@example.com', 'pl-1');
    const [paid] = (await runPayouts(system(org.id), { trigger: 'manual' })).payouts;
    assert.equal(paid!.status, 'paid');
    // What a pass leaves when it settles the payout and dies before applying the reversal Stripe sent meanwhile.
    const transfer = onlyTransfer(org);
    await system(org.id).collection('payouts').doc(paid!.id).update({
      reversalParked: true, parkedReversal: { transferId: transfer.id, amount: 500, amountReversed: 500, eventId: 'evt_parked_left', at: new Date().toISOString() },
    });
    const r = await tick(new Date());
    assert.ok(r.finished.some((f) => f.orgId === org.id), 'the tick visits the organisation');
    const [payout] = await payouts(org);
    assert.deepEqual([payout!.status, payout!.reversalParked], ['reversed', false]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 500, paid: 0, available: 500 }, 'owed again');
    assert.equal(await conversionStatus(org, conversion), 'approved');
  });

  it('pays once when two ticks run at once: the second meets the lease and leaves the payout to the first', async () => {
    const { org } = await payableOrg('two-ticks@example.com', 'tt-1');
    const now = new Date();
    await weekly(org, notDueOn(now));
    const kept = await keptAfter429(org);

    const gated = gatedFirstTransfer(stripeProvider);
    setProvider(gated.provider);
    const first = tick(now);
    try {
      await Promise.race([gated.reached, first.then(() => assert.fail('the first tick ended without sending the kept payout'))]);
      const second = await tick(now);
      assert.deepEqual([second.busy.includes(org.id), second.finished.some((f) => f.orgId === org.id)], [true, false]);
    } finally {
      gated.release();
    }
    const done = await first;
    assert.deepEqual(done.finished.find((f) => f.orgId === org.id)?.payouts.map((p) => p.status), ['paid']);
    assert.equal(gated.calls(), 1, 'one transfer attempt between the two ticks');
    assert.deepEqual([onlyTransfer(org).amount, meta(onlyTransfer(org)).payoutId], [500, kept.id]);
    assert.deepEqual(await entryStatuses(org, kept.id as string), ['paid']);
    assert.equal(await runCount(org), 1);
  });

  it('leaves kept payouts past the finishing budget to the next tick, and still pays the organisations due today', async () => {
    const { org: kept } = await payableOrg('kept-budget@example.com', 'kb2-1');
    const keptPayout = await keptAfter429(kept);
    const { org: due } = await payableOrg('due-budget@example.com', 'db2-1');
    const today = new Date();
    await weekly(due, isoWeekday(today));

    const r = await tick(today, { finishBudgetMs: 0 });
    assert.ok(r.deferred.includes(kept.id), 'reported as left for the next tick');
    assert.deepEqual([transfersOf(kept).length, (await payouts(kept)).map((p) => [p.status, p.reason])], [0, [['claimed', 'rate_limited']]]);
    assert.deepEqual([onlyTransfer(due).amount, (await payouts(due)).map((p) => p.status)], [500, ['paid']], 'payday is not held up');

    await tick(today);
    assert.deepEqual((await payouts(kept)).map((p) => [p.id, p.status, p.transferId]), [[keptPayout.id, 'paid', onlyTransfer(kept).id]]);
  });

  it('finishes the other organisations while one\'s lease is held, and that one on a later tick', async () => {
    const { org: held } = await payableOrg('kept-held@example.com', 'kh-1');
    const { org: free } = await payableOrg('kept-free@example.com', 'kf-1');
    const [heldPayout, freePayout] = [await keptAfter429(held), await keptAfter429(free)];
    const lock = system(held.id).collection('locks').doc('payout-run');
    await lock.set({ runId: 'run_elsewhere', token: 'elsewhere', expiresAt: Date.now() + 60_000 });

    const r = await tick(new Date());
    assert.deepEqual((await payouts(free)).map((p) => [p.id, p.status]), [[freePayout.id, 'paid']]);
    assert.equal(onlyTransfer(free).amount, 500);
    assert.deepEqual((await payouts(held)).map((p) => [p.status, p.reason]), [['claimed', 'rate_limited']], 'not touched under another run\'s lease');
    assert.equal(transfersOf(held).length, 0);
    assert.deepEqual(r.busy, [held.id]);

    await lock.delete(); // that run ended
    await tick(new Date());
    assert.deepEqual((await payouts(held)).map((p) => [p.id, p.status, p.transferId]), [[heldPayout.id, 'paid', onlyTransfer(held).id]]);
    assert.deepEqual(await balance(held), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
  });
});
