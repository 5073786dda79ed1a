import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it, mock } from 'node:test';
import Stripe from 'stripe';
import type { PayoutProvider } from '../functions/adapters/payouts';
import type { OrgScope } from '../functions/services/tenancy';
import { campaignBody, type TestStack } from './helpers/stack';
import { gatedFirstTransfer, moneyOrgs, startMoneyStack, webhookSecret, type MoneyOrg, type MoneyStack } from './helpers/money-org';
import type { StripeStandIn } from './helpers/stripe-stand-in';

/**
 * Payout runs that fail part-way and are retried, runs that die between their writes, and Stripe events that
 * arrive partial, redelivered or out of order: through the real emulators and the Stripe stand-in, with the
 * services called directly where a test needs a fixed run id or a state only a crash leaves.
 */
let money: MoneyStack;
let s: TestStack;
let stripe: StripeStandIn;
let setProvider: (p: PayoutProvider | undefined) => void;
let stripeProvider: PayoutProvider;
let runPayouts: typeof import('../functions/services/payout-runs').runPayouts;
let system: (orgId: string) => OrgScope;

type Org = MoneyOrg;
type Row = Record<string, unknown>;
const orgs = moneyOrgs(() => s);
const { setupOrg, addAffiliate, patch, balance, approved } = orgs;
const conversionStatus = async (org: Org, id: string) => (await s.call('GET', `/v1/orgs/${org.id}/conversions/${id}`, { auth: org.token })).body.status;
const onboard = (org: Org, affiliate = org.affiliate) => orgs.onboard(org, stripe, affiliate);
const payoutsOf = async (org: Org, affiliate: string): Promise<Row[]> => (await system(org.id).collection('payouts').where('affiliateId', '==', affiliate).get()).docs.map((d) => d.data());
const transfersTo = (org: Org, affiliate: string) => [...stripe.transfers.values()].filter((t) => (t.metadata as Record<string, string>).orgId === org.id && (t.metadata as Record<string, string>).affiliateId === affiliate);
const transferred = (org: Org, affiliate: string) => transfersTo(org, affiliate).reduce((sum, t) => sum + (t.amount as number), 0);
/** A provider that pays through the stand-in and then dies for one affiliate, as a process killed mid-run would. */
const crashingFor = (affiliate: string): PayoutProvider => ({
  ...stripeProvider, transfer: async (req) => {
    const out = await stripeProvider.transfer(req);
    if (req.metadata.affiliateId === affiliate) throw new Error('process killed after Stripe answered');
    return out;
  },
});

/** A provider whose transfer reaches Stripe and is made, but whose answer is lost on the way back (indeterminate). */
const answerLostFor = (affiliate: string): PayoutProvider => ({
  ...stripeProvider, transfer: async (req) => {
    const out = await stripeProvider.transfer(req);
    if (req.metadata.affiliateId !== affiliate) return out;
    return { ok: false, reason: 'indeterminate', message: 'socket hang up after Stripe made the transfer', retryable: true };
  },
});
/** What the affiliate holds at Stripe: what was transferred, less what Stripe reversed. */
const received = (org: Org, affiliate: string) => transfersTo(org, affiliate).reduce((sum, t) => sum + (t.amount as number) - (t.amount_reversed as number), 0);
const rateLimit = { status: 429, body: { error: { type: 'invalid_request_error', code: 'rate_limit', message: 'Too many requests hit the API too quickly.' } } };
const rotatedKey = { status: 401, body: { error: { type: 'invalid_request_error', message: 'Invalid API Key provided: sk_test_****old' } } };

/**
 * What a run two days ago left: a payout of 500 USD `claimed` under run_long_ago (so its Stripe key may be forgotten)
 * holding the conversion's commission entry.
 */
async function claimedTwoDaysAgo(org: Org, conversion: string, payoutId: string, extra: Row = {}): Promise<void> {
  const { ledgerEntryId } = await import('../functions/services/conversion-lifecycle');
  const scope = system(org.id);
  const longAgo = new Date(Date.now() - 2 * 86_400_000).toISOString();
  await scope.collection('payouts').doc(payoutId).create({
    id: payoutId, runId: 'run_long_ago', affiliateId: org.affiliate, currency: 'USD', createdAt: longAgo, claimedAt: longAgo, simulated: false, transferId: null,
    amount: 500, entryCount: 1, status: 'claimed', reason: null, ...extra,
  });
  await scope.collection('ledger').doc(ledgerEntryId(conversion, 'commission')).update({ status: 'claimed', payoutId });
}

/** The transfer an attempt of run_long_ago made at Stripe for a payout (its answer lost), as settle sends it. */
const sentLongAgo = (org: Org, account: string, payoutId: string, o: { affiliateId?: string; amount?: number } = {}) => stripeProvider.transfer({
  payoutId, amount: o.amount ?? 500, currency: 'USD', destinationAccountId: account, transferGroup: 'run_long_ago',
  metadata: { orgId: org.id, affiliateId: o.affiliateId ?? org.affiliate, payoutId, runId: 'run_long_ago' }, description: `ABP payout ${payoutId}`,
});

const stripeLib = new Stripe('sk_test_unused');
/** Posts a signed Stripe event to the webhook; answers its outcome (any status but 200 fails the test). */
const deliver = async (event: Row) => {
  const payload = JSON.stringify({ object: 'event', created: Math.floor(Date.now() / 1000), ...event });
  const r = await fetch(`${s.baseUrl}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': stripeLib.webhooks.generateTestHeaderString({ payload, secret: webhookSecret }) }, body: payload });
  assert.equal(r.status, 200);
  return ((await r.json()) as { outcome: string }).outcome;
};
const reversal = (id: string, payout: Row, orgId: string, reversed: number, transferId = payout.transferId) =>
  deliver({ id, type: 'transfer.reversed', data: { object: { id: transferId, object: 'transfer', amount: payout.amount, amount_reversed: reversed, currency: String(payout.currency).toLowerCase(), reversed: reversed === payout.amount, metadata: { orgId, payoutId: payout.id } } } });

/** Reverses a transfer at the stand-in to a running total, as Stripe does, and delivers its transfer.reversed. */
const reverseAtStripe = (eventId: string, transferId: string, total: number) => {
  const transfer = stripe.transfers.get(transferId)!;
  Object.assign(transfer, { amount_reversed: total, reversed: total === transfer.amount });
  return deliver({ id: eventId, type: 'transfer.reversed', data: { object: { ...transfer } } });
};
/** The only transfer made to an affiliate. */
const onlyTransfer = (org: Org, affiliate: string) => {
  const all = transfersTo(org, affiliate);
  assert.equal(all.length, 1, 'exactly one transfer');
  return all[0]!;
};

/** Posts a signed Stripe event to the webhook; answers the response, whatever its status. */
const post = (event: Row) => {
  const payload = JSON.stringify({ object: 'event', created: Math.floor(Date.now() / 1000), ...event });
  return fetch(`${s.baseUrl}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': stripeLib.webhooks.generateTestHeaderString({ payload, secret: webhookSecret }) }, body: payload });
};

/** Reverses the payout's transfer in full at the stand-in; answers its transfer.reversed event, not yet delivered. */
const reversedInFull = (payout: Row, eventId: string): Row => {
  const transfer = stripe.transfers.get(payout.transferId as string)!;
  Object.assign(transfer, { amount_reversed: transfer.amount, reversed: true });
  return { id: eventId, type: 'transfer.reversed', data: { object: { ...transfer } } };
};

/** Runs `act` with every Firestore transaction after the first `n` failing, as a process dying there would. */
async function failingTransactionsAfter<T>(n: number, act: () => Promise<T>): Promise<T> {
  const { firestore } = await import('../functions/adapters/firestore');
  const db = firestore();
  const runTransaction = db.runTransaction.bind(db);
  let calls = 0;
  db.runTransaction = ((fn: Parameters<typeof db.runTransaction>[0], opts?: Parameters<typeof db.runTransaction>[1]) => {
    if (++calls > n) return Promise.reject(new Error('process killed between transactions'));
    return runTransaction(fn, opts);
  }) as typeof db.runTransaction;
  try {
    return await act();
  } finally {
    db.runTransaction = runTransaction;
  }
}

/**
 * A payout of `count` commissions of 500, paid through the stand-in: one conversion booked by the pipeline, copied
 * into the rest (more entries than the transaction recording a reversal restores).
 */
async function largePaidPayout(org: Org, prefix: string, count: number): Promise<Row> {
  const { ledgerEntryId } = await import('../functions/services/conversion-lifecycle');
  const { firestore } = await import('../functions/adapters/firestore');
  const scope = system(org.id);
  const first = await approved(org, `${prefix}-0`);
  const conversion = (await scope.collection('conversions').doc(first).get()).data()!;
  const entry = (await scope.collection('ledger').doc(ledgerEntryId(first, 'commission')).get()).data()!;
  const batch = firestore().batch();
  for (let i = 1; i < count; i++) {
    const id = `${first}x${i}`;
    batch.set(scope.collection('conversions').doc(id), { ...conversion, id, txnId: id });
    batch.set(scope.collection('ledger').doc(ledgerEntryId(id, 'commission')), { ...entry, id: ledgerEntryId(id, 'commission'), conversionId: id });
  }
  await batch.commit();
  await onboard(org);
  const [payout] = (await runPayouts(scope, { trigger: 'manual' })).payouts;
  assert.deepEqual([payout!.status, payout!.amount], ['paid', count * 500]);
  return payout as unknown as Row;
}

before(async () => {
  money = await startMoneyStack();
  ({ s, stripe, stripeProvider, setProvider, system, runPayouts } = money);
});
beforeEach(() => setProvider(stripeProvider));
after(() => money.close());

describe('a payout run retried under the same id', () => {
  it('does not claim into a payout it blocked: the affiliate onboarded meanwhile is paid the balance once', async () => {
    const org = await setupOrg('retry-blocked@example.com');
    const other = await addAffiliate(org, 'retry-blocked-other');
    await approved(org, 'rb-1');
    await approved(org, 'rb-2', other.link);
    await onboard(org, other.affiliate);
    setProvider(crashingFor(other.affiliate));
    await assert.rejects(runPayouts(system(org.id), { trigger: 'manual', runId: 'run_retry_blocked' }), /process killed/);
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.status, p.amount]), [['blocked', 500]]);

    await onboard(org);
    setProvider(stripeProvider);
    await runPayouts(system(org.id), { trigger: 'manual', runId: 'run_retry_blocked' });
    assert.ok(transferred(org, org.affiliate) <= 500, `paid ${transferred(org, org.affiliate)} for a balance of 500`);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.deepEqual([transferred(org, org.affiliate), transfersTo(org, org.affiliate).length], [500, 1]);
    assert.deepEqual([transferred(org, other.affiliate), transfersTo(org, other.affiliate).length], [500, 1]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
  });

  it('leaves a paid payout paid and pays money approved since under a later run', async () => {
    const org = await setupOrg('retry-paid@example.com');
    const other = await addAffiliate(org, 'retry-paid-other');
    await approved(org, 'rp-1');
    await approved(org, 'rp-2', other.link);
    await onboard(org);
    await onboard(org, other.affiliate);
    setProvider(crashingFor(other.affiliate));
    await assert.rejects(runPayouts(system(org.id), { trigger: 'manual', runId: 'run_retry_paid' }), /process killed/);
    const [paid] = await payoutsOf(org, org.affiliate);
    assert.deepEqual([paid!.status, paid!.amount], ['paid', 500]);

    await approved(org, 'rp-3');
    setProvider(stripeProvider);
    await runPayouts(system(org.id), { trigger: 'manual', runId: 'run_retry_paid' });
    const again = (await system(org.id).collection('payouts').doc(paid!.id as string).get()).data()!;
    assert.deepEqual([again.status, again.amount, again.transferId], ['paid', 500, paid!.transferId]);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.deepEqual(transfersTo(org, org.affiliate).map((t) => t.amount).sort(), [500, 500]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 1000, available: 0 });
  });

  it('refuses a second attempt of the same run while the first holds the lease', async () => {
    const org = await setupOrg('retry-lease@example.com');
    await approved(org, 'rl-1');
    await onboard(org);
    const gated = gatedFirstTransfer(stripeProvider);
    setProvider(gated.provider);
    const first = runPayouts(system(org.id), { trigger: 'manual', runId: 'run_same_twice' });
    await gated.reached;
    try {
      await assert.rejects(runPayouts(system(org.id), { trigger: 'manual', runId: 'run_same_twice' }), /in progress/);
    } finally {
      gated.release();
    }
    assert.equal((await first).status, 'completed');
    assert.deepEqual([transferred(org, org.affiliate), transfersTo(org, org.affiliate).length], [500, 1]);
  });
});

describe('an affiliate changed while a run pays others', () => {
  it('is not paid once blocked, though the run had planned its payout', async () => {
    const org = await setupOrg('blocked-mid-run@example.com');
    // Nine affiliates: a run pays eight at a time, so the ninth waits for a turn while the first eight's transfers are held.
    const all = [{ affiliate: org.affiliate, link: org.link }];
    for (let i = 1; i < 9; i++) all.push(await addAffiliate(org, `mid${i}`));
    for (const [i, a] of all.entries()) {
      await onboard(org, a.affiliate);
      await approved(org, `mid-${i}`, a.link);
    }
    const last = all.map((a) => a.affiliate).sort().at(-1)!;
    let arrived = 0;
    let eightArrived!: () => void;
    const eight = new Promise<void>((resolve) => (eightArrived = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    setProvider({ ...stripeProvider, transfer: async (req) => {
      if (++arrived === 8) eightArrived();
      await gate;
      return stripeProvider.transfer(req);
    } });
    const run = runPayouts(system(org.id), { trigger: 'manual' });
    await eight;
    assert.equal(transfersTo(org, last).length, 0);
    assert.equal((await s.call('PATCH', `/v1/orgs/${org.id}/affiliates/${last}`, { auth: org.token, body: { status: 'blocked' } })).status, 200);
    release();
    const result = await run;
    const byAffiliate = new Map(result.payouts.map((p) => [p.affiliateId, p]));
    assert.deepEqual([byAffiliate.get(last)?.status, byAffiliate.get(last)?.reason], ['blocked', 'affiliate_blocked']);
    assert.equal(transferred(org, last), 0);
    assert.equal((await balance(org, last)).available, 500, 'its money waits in its balance');
    for (const { affiliate } of all.filter((a) => a.affiliate !== last)) assert.equal(transferred(org, affiliate), 500, affiliate);
  });
});

describe('a run that outlived its lease (its renewals failed, or its instance was throttled after the request)', () => {
  /** What a run or pass that found the lease expired writes: the lock is another holder's now. */
  const takeOver = (org: Org) => system(org.id).collection('locks').doc('payout-run').set({ runId: 'run_took_over', token: 'someone-else', expiresAt: Date.now() + 60_000 });
  const entryOf = async (org: Org, conversion: string) => {
    const { ledgerEntryId } = await import('../functions/services/conversion-lifecycle');
    return (await system(org.id).collection('ledger').doc(ledgerEntryId(conversion, 'commission')).get()).data()!;
  };
  const insufficientFunds = { status: 400, body: { error: { type: 'invalid_request_error', code: 'balance_insufficient', message: 'You have insufficient available funds in your Stripe account.' } } };

  /**
   * A run of one payout, held inside its transfer (past its last lease check) while another holder takes the
   * lease over; `meanwhile` is what that holder does before the transfer goes on.
   */
  async function outlivedAtTransfer(name: string, meanwhile: (org: Org, conversion: string) => Promise<void>) {
    const org = await setupOrg(`${name}@example.com`);
    const conversion = await approved(org, `${name}-1`);
    await onboard(org);
    const gated = gatedFirstTransfer(stripeProvider);
    setProvider(gated.provider);
    const run = runPayouts(system(org.id), { trigger: 'manual', runId: `run_${name}` });
    await gated.reached;
    await takeOver(org);
    await meanwhile(org, conversion);
    gated.release();
    return { org, conversion, run };
  }

  it('gives nothing back when Stripe refuses its transfer after another run took over: the claim stays for that run', async () => {
    const { org, conversion, run } = await outlivedAtTransfer('lease-lost-refused', async () => stripe.failNext('/v1/transfers', insufficientFunds));
    await assert.rejects(run, /lost its lease/);
    // Released now, the entry could be paid by the holder's own send of the same payout as well as by a later run.
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => p.status), ['claimed']);
    assert.deepEqual([(await entryOf(org, conversion)).status, await conversionStatus(org, conversion)], ['claimed', 'approved']);
  });

  it('still records a transfer Stripe accepted after another run took over: that money has moved', async () => {
    const { org, conversion, run } = await outlivedAtTransfer('lease-lost-paid', async () => undefined);
    await run;
    const transfer = onlyTransfer(org, org.affiliate);
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.status, p.transferId]), [['paid', transfer.id]]);
    assert.deepEqual([(await entryOf(org, conversion)).status, await conversionStatus(org, conversion)], ['paid', 'paid']);
  });

  it('does not overwrite a payout the holder gave back when its late transfer goes through: it flags it to reconcile', async () => {
    // The holder's own send of the payout is refused before Stripe stores anything (it read a destination that
    // has changed since), and it gives the payout's entries back before the stale run's send goes through.
    const errors = mock.method(console, 'error', () => undefined);
    try {
      const { org, conversion, run } = await outlivedAtTransfer('lease-lost-late-send', async (o, c) => {
        const [payout] = await payoutsOf(o, o.affiliate);
        const { ledgerEntryId } = await import('../functions/services/conversion-lifecycle');
        await system(o.id).collection('payouts').doc(payout!.id as string).update({ status: 'failed', reason: 'stripe_error', failedAt: new Date().toISOString() });
        await system(o.id).collection('ledger').doc(ledgerEntryId(c, 'commission')).update({ status: 'approved', payoutId: null });
      });
      await run;
      const transfer = onlyTransfer(org, org.affiliate);
      assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.status, p.strayTransferId]), [['failed', transfer.id]]);
      assert.equal((await entryOf(org, conversion)).status, 'approved', 'given back by the holder, and left so');
      const logged = errors.mock.calls.map((c) => String(c.arguments[0]));
      assert.ok(logged.some((l) => l.includes('reconcile') && l.includes(String(transfer.id))), 'an ERROR names the transfer to reconcile');
    } finally {
      errors.mock.restore();
    }
  });

  it('gives nothing back once a transfer was recorded for the payout meanwhile', async () => {
    const org = await setupOrg('lease-holder-refused@example.com');
    const conversion = await approved(org, 'lhr-1');
    await onboard(org);
    const gated = gatedFirstTransfer(stripeProvider);
    setProvider(gated.provider);
    const run = runPayouts(system(org.id), { trigger: 'manual', runId: 'run_holder_refused' });
    await gated.reached;
    // A stale run's transfer of the same payout is recorded while this run's own send is under way, and refused.
    const [payout] = await payoutsOf(org, org.affiliate);
    const { ledgerEntryId } = await import('../functions/services/conversion-lifecycle');
    await system(org.id).collection('payouts').doc(payout!.id as string).update({ status: 'paid', transferId: 'tr_sent_by_the_stale_run', paidAt: new Date().toISOString() });
    await system(org.id).collection('ledger').doc(ledgerEntryId(conversion, 'commission')).update({ status: 'paid' });
    stripe.failNext('/v1/transfers', insufficientFunds);
    gated.release();
    await run;
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.status, p.transferId]), [['paid', 'tr_sent_by_the_stale_run']]);
    assert.equal((await entryOf(org, conversion)).status, 'paid');
  });

  it('sends nothing with less than 5 minutes of its lease left, even a payout it has just looked up', async () => {
    const org = await setupOrg('lease-lost-send@example.com');
    const conversion = await approved(org, 'lls-1');
    await onboard(org);
    const scope = system(org.id);
    await claimedTwoDaysAgo(org, conversion, 'po_kept_over_a_day');
    // Claimed over a day ago, so the run looks for an earlier transfer first; meanwhile its renewals fail (or its
    // instance is throttled) until 2 minutes of the lease are left: too little for a send and stripe-node's retries.
    let arrive!: () => void;
    const reached = new Promise<void>((r) => (arrive = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    setProvider({ ...stripeProvider, findTransfer: async (q) => {
      arrive();
      await gate;
      return stripeProvider.findTransfer(q);
    } });
    const run = runPayouts(scope, { trigger: 'manual', runId: 'run_outlived_lookup' });
    await reached;
    await scope.collection('locks').doc('payout-run').update({ expiresAt: Date.now() + 2 * 60_000 });
    release();
    await assert.rejects(run, /lost its lease/);
    assert.equal(transfersTo(org, org.affiliate).length, 0, 'no transfer sent');
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => p.status), ['claimed']);
  });
});

describe('recovery of a run that died', () => {
  it('pays a payout left `claiming` with its entries claimed, under its own id', async () => {
    const org = await setupOrg('claiming@example.com');
    const conversion = await approved(org, 'cl-1');
    await onboard(org);
    const { ledgerEntryId } = await import('../functions/services/conversion-lifecycle');
    const scope = system(org.id);
    const payoutId = 'po_left_claiming';
    // What a run leaves when it dies after its claim transaction and before marking the payout claimed.
    await scope.collection('payouts').doc(payoutId).create({
      id: payoutId, runId: 'run_died', affiliateId: org.affiliate, currency: 'USD', createdAt: new Date().toISOString(), simulated: false, transferId: null,
      amount: 500, entryCount: 1, status: 'claiming', reason: null,
    });
    await scope.collection('ledger').doc(ledgerEntryId(conversion, 'commission')).update({ status: 'claimed', payoutId });
    await runPayouts(scope, { trigger: 'manual' });
    const payout = (await scope.collection('payouts').doc(payoutId).get()).data()!;
    assert.deepEqual([payout.status, payout.amount], ['paid', 500]);
    assert.deepEqual(transfersTo(org, org.affiliate).map((t) => [t.amount, (t.metadata as Record<string, string>).payoutId]), [[500, payoutId]]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
    assert.equal(await conversionStatus(org, conversion), 'paid');
  });

  it('finds the transfer of a payout claimed over a day ago instead of sending it again after Stripe forgot the key', async () => {
    const org = await setupOrg('old-claim@example.com');
    const conversion = await approved(org, 'oc-1');
    const account = await onboard(org);
    const scope = system(org.id);
    const payoutId = 'po_claimed_long_ago';
    await claimedTwoDaysAgo(org, conversion, payoutId);
    // The attempt whose answer was lost, two days ago; Stripe has since dropped its idempotency key.
    const sent = await sentLongAgo(org, account, payoutId);
    assert.ok(sent.ok);
    stripe.forgetIdempotencyKeys();
    await runPayouts(scope, { trigger: 'manual' });
    const payout = (await scope.collection('payouts').doc(payoutId).get()).data()!;
    assert.deepEqual([payout.status, payout.transferId], ['paid', sent.transferId]);
    assert.equal(transfersTo(org, org.affiliate).length, 1, 'exactly one transfer');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
  });

  it("looks for a payout's earlier transfer among the accounts it was sent to, not through the whole run, even after the affiliate changed account", async () => {
    const org = await setupOrg('old-claim-narrow@example.com');
    const conversion = await approved(org, 'ocn-1');
    const account = await onboard(org);
    const scope = system(org.id);
    // A run's other payouts in the same transfer group, which the search has no reason to page through.
    const others = [];
    for (let i = 0; i < 3; i++) {
      others.push(await sentLongAgo(org, account, `po_neighbour_${i}`, { affiliateId: `aff_neighbour_${i}`, amount: 100 }));
    }
    const payoutId = 'po_claimed_long_ago_narrow';
    const sent = await sentLongAgo(org, account, payoutId);
    assert.ok(sent.ok && others.every((o) => o.ok));
    // The attempt recorded where it went before it went (as settle does); the affiliate has since connected another account.
    await claimedTwoDaysAgo(org, conversion, payoutId, { sentTo: [account] });
    await scope.collection('affiliates').doc(org.affiliate).update({ stripeAccountId: 'acct_connected_since' });
    stripe.forgetIdempotencyKeys();
    const listed = stripe.requests.length;
    await runPayouts(scope, { trigger: 'manual' });
    const payout = (await scope.collection('payouts').doc(payoutId).get()).data()!;
    assert.deepEqual([payout.status, payout.transferId], ['paid', sent.transferId]);
    assert.equal(transfersTo(org, org.affiliate).length, 1, 'exactly one transfer, to the first account');
    const searches = stripe.requests.slice(listed).filter((r) => r.method === 'GET' && r.path === '/v1/transfers');
    assert.deepEqual(searches.map((r) => [r.body.transfer_group, r.body.destination]), [['run_long_ago', account]]);
  });

  it('finds the transfer a refused send made to the account the affiliate connected since its earlier attempt', async () => {
    const org = await setupOrg('refused-new-account@example.com');
    const conversion = await approved(org, 'rna-1');
    const account = await onboard(org);
    const scope = system(org.id);
    const payoutId = 'po_refused_new_account';
    // An earlier attempt went to an account since replaced; this run's send goes through, but is answered with a
    // refusal (a dropped connection, then a resend refused).
    await claimedTwoDaysAgo(org, conversion, payoutId, { sentTo: ['acct_replaced_since'] });
    setProvider({ ...stripeProvider, transfer: async (req) => {
      assert.ok((await stripeProvider.transfer(req)).ok);
      return { ok: false, reason: 'account_invalid', message: 'refused after it went through', retryable: false };
    } });
    await runPayouts(scope, { trigger: 'manual' });
    const payout = (await scope.collection('payouts').doc(payoutId).get()).data()!;
    assert.deepEqual([payout.status, payout.sentTo], ['paid', ['acct_replaced_since', account]]);
    assert.equal(transfersTo(org, org.affiliate).length, 1);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 }, 'not given back to be paid again');
  });

  it('records the account a payout goes to before it is sent', async () => {
    const org = await setupOrg('sent-to@example.com');
    await approved(org, 'st-1');
    const account = await onboard(org);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.status, p.sentTo]), [['paid', [account]]]);
  });

  it('does not mark paid a conversion reversed while its payout was being transferred', async () => {
    const org = await setupOrg('reversed-midway@example.com');
    const conversion = await approved(org, 'rm-1');
    await onboard(org);
    setProvider({ ...stripeProvider, transfer: async (req) => {
      assert.equal((await patch(org, conversion, { status: 'reversed', reason: 'chargeback' })).status, 200);
      return stripeProvider.transfer(req);
    } });
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.equal(await conversionStatus(org, conversion), 'reversed');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: -500, paid: 500, available: -500 });
  });
});

describe('a transfer whose answer was lost', () => {
  it("leaves the outcome another run recorded meanwhile, not its own reason for keeping the claim", async () => {
    const org = await setupOrg('stale-reason@example.com');
    await approved(org, 'sr-1');
    await onboard(org);
    const scope = system(org.id);
    // While this run waits on Stripe (its lease lost to a throttled instance), the run that took over pays the payout.
    setProvider({ ...stripeProvider, transfer: async (req) => {
      const out = await stripeProvider.transfer(req);
      assert.ok(out.ok);
      await scope.collection('payouts').doc(req.payoutId).update({ status: 'paid', transferId: out.transferId, reason: null });
      return { ok: false, reason: 'rate_limited', message: 'Too many requests hit the API too quickly.', retryable: true };
    } });
    await runPayouts(scope, { trigger: 'manual', runId: 'run_stale_reason' });
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.status, p.reason, p.lastError]), [['paid', null, undefined]]);
  });

  it('keeps the claim when the resend is rate limited (429 is never replayed), and pays once on the next run', async () => {
    const org = await setupOrg('lost-429@example.com');
    await approved(org, 'l4-1');
    await onboard(org);
    setProvider(crashingFor(org.affiliate));
    await assert.rejects(runPayouts(system(org.id), { trigger: 'manual' }), /process killed/);
    const [sent] = await payoutsOf(org, org.affiliate);
    assert.deepEqual([sent!.status, transfersTo(org, org.affiliate).length], ['claimed', 1]);

    setProvider(stripeProvider);
    stripe.failNext('/v1/transfers', rateLimit);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.equal(onlyTransfer(org, org.affiliate).amount, 500);
    const kept = (await system(org.id).collection('payouts').doc(sent!.id as string).get()).data()!;
    assert.deepEqual([kept.status, kept.reason], ['claimed', 'rate_limited'], 'the claim is kept for the same key');

    await runPayouts(system(org.id), { trigger: 'manual' });
    const transfer = onlyTransfer(org, org.affiliate);
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.id, p.status, p.transferId]), [[sent!.id, 'paid', transfer.id]]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
  });

  for (const [reason, refusal] of [
    ['auth_failed', rotatedKey],
    ['idempotency_conflict', { status: 400, body: { error: { type: 'idempotency_error', message: 'Keys for idempotent requests can only be used with the same parameters they were first used with.' } } }],
    ['stripe_error', { status: 400, body: { error: { type: 'invalid_request_error', message: 'Something Stripe refused before executing.' } } }],
  ] as const) {
    it(`settles as paid a payout whose earlier answer was lost when its resend is refused (${reason}), finding the transfer`, async () => {
      const org = await setupOrg(`lost-${reason}@example.com`);
      const conversion = await approved(org, `lr-${reason}`);
      await onboard(org);
      setProvider(answerLostFor(org.affiliate));
      const first = await runPayouts(system(org.id), { trigger: 'manual' });
      assert.deepEqual(first.payouts.map((p) => [p.status, p.reason]), [['claimed', 'indeterminate']]);

      setProvider(stripeProvider);
      // Not stored under the key: in front of the idempotency layer, or refused before the endpoint executed.
      stripe.failNext('/v1/transfers', refusal, 1, { stored: false });
      await runPayouts(system(org.id), { trigger: 'manual' });
      const transfer = onlyTransfer(org, org.affiliate);
      assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.id, p.status, p.transferId]), [[first.payouts[0]!.id, 'paid', transfer.id]]);
      assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
      assert.equal(await conversionStatus(org, conversion), 'paid');
      await runPayouts(system(org.id), { trigger: 'manual' });
      assert.equal(onlyTransfer(org, org.affiliate).id, transfer.id, 'nothing is sent again');
    });
  }

  it('pays, not gives back, a first transfer whose answer was lost and whose resend by stripe-node was refused', async () => {
    const org = await setupOrg('resend-refused@example.com');
    const conversion = await approved(org, 'rr-1');
    await onboard(org);
    // Stripe makes the transfer and the connection drops before its answer arrives; stripe-node sends the request
    // again by itself, and that is refused with a 401 from in front of the idempotency layer (a key being rolled,
    // live again for the lookup; after a real rotation the lookup fails too and the claim is kept, tested below).
    stripe.dropAnswerNext('/v1/transfers');
    stripe.failNext('/v1/transfers', rotatedKey, 1);
    const run = await runPayouts(system(org.id), { trigger: 'manual' });
    const transfer = onlyTransfer(org, org.affiliate);
    assert.deepEqual(run.payouts.map((p) => [p.status, p.transferId]), [['paid', transfer.id]]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
    assert.equal(await conversionStatus(org, conversion), 'paid');
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.equal(transfersTo(org, org.affiliate).length, 1, 'nothing is sent again');
  });

  it('gives back a payout refused for insufficient balance without looking it up: Stripe stores that refusal', async () => {
    const org = await setupOrg('no-lookup-balance@example.com');
    await approved(org, 'nlb-1');
    await onboard(org);
    const lookupsBefore = stripe.requests.filter((r) => r.method === 'GET' && r.path === '/v1/transfers').length;
    stripe.failNext('/v1/transfers', { status: 400, body: { error: { type: 'invalid_request_error', code: 'balance_insufficient', message: 'You have insufficient available funds in your Stripe account.' } } });
    const run = await runPayouts(system(org.id), { trigger: 'manual' });
    assert.deepEqual(run.payouts.map((p) => [p.status, p.reason]), [['failed', 'balance_insufficient']]);
    assert.equal(stripe.requests.filter((r) => r.method === 'GET' && r.path === '/v1/transfers').length, lookupsBefore, 'no transfer list');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 500, paid: 0, available: 500 });
  });

  it('keeps the claim when the resend is refused and the transfer cannot be looked up either', async () => {
    const org = await setupOrg('lost-lookup@example.com');
    await approved(org, 'll-1');
    await onboard(org);
    setProvider(answerLostFor(org.affiliate));
    const [payout] = (await runPayouts(system(org.id), { trigger: 'manual' })).payouts;
    setProvider(stripeProvider);
    stripe.failNext('/v1/transfers', rotatedKey, 2); // the resend and the lookup
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.equal(transfersTo(org, org.affiliate).length, 1);
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.status, p.reason]), [['claimed', 'auth_failed']]);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.id, p.status, p.transferId]), [[payout!.id, 'paid', onlyTransfer(org, org.affiliate).id]]);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
  });

  it('keeps a claim over 23 h old whose lookup fails, and still pays every other affiliate in the run', async () => {
    const org = await setupOrg('old-lookup@example.com');
    const other = await addAffiliate(org, 'other-old');
    await approved(org, 'ol-1');
    await approved(org, 'ol-2', other.link);
    await onboard(org);
    setProvider(answerLostFor(org.affiliate));
    await runPayouts(system(org.id), { trigger: 'manual' });
    setProvider(stripeProvider);
    const [kept] = await payoutsOf(org, org.affiliate);
    // Claimed two days ago: Stripe may have forgotten its key, so the transfer is looked up first, and that fails.
    await system(org.id).collection('payouts').doc(kept!.id as string).update({ claimedAt: new Date(Date.now() - 2 * 86_400_000).toISOString() });
    await onboard(org, other.affiliate);
    stripe.failNext('/v1/transfers', rateLimit, 1);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.status, p.reason]), [['claimed', 'lookup_failed']]);
    assert.equal(transfersTo(org, org.affiliate).length, 1, 'not sent again while nobody can tell');
    assert.equal(transferred(org, other.affiliate), 500, 'the rest of the run went on');
  });
});

describe('minimum payout', () => {
  it('holds back only the payout currency below the minimum, pays other currencies, and says what it held back', async () => {
    const org = await setupOrg('minimum@example.com', { minimumPayout: 5000 });
    const eur = (await s.call('POST', `/v1/orgs/${org.id}/campaigns`, { auth: org.token, body: campaignBody({ name: 'Euro sale', currency: 'EUR', payout: { type: 'cpa', amount: 500 }, holdDays: 0 }) })).body.id;
    const eurLink = (await s.call('POST', `/v1/orgs/${org.id}/links`, { auth: org.token, body: { campaignId: eur, affiliateId: org.affiliate } })).body.id;
    await approved(org, 'mn-1');
    await approved(org, 'mn-2', eurLink);
    await onboard(org);
    const heldBack = [{ affiliateId: org.affiliate, currency: 'USD', amount: 500, minimum: 5000 }];
    const dry = await s.call('POST', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token, body: { dryRun: true } });
    assert.deepEqual([dry.body.payouts.map((p: { currency: string; status: string }) => [p.currency, p.status]), dry.body.belowMinimum], [[['EUR', 'would_pay']], heldBack]);
    const run = await s.call('POST', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token, body: {} });
    assert.equal(run.status, 201, run.text);
    assert.deepEqual(run.body.payouts.map((p: { currency: string; amount: number; status: string }) => [p.currency, p.amount, p.status]), [['EUR', 500, 'paid']]);
    assert.deepEqual(run.body.belowMinimum, heldBack);
    assert.deepEqual((await s.call('GET', `/v1/orgs/${org.id}/payout-runs/${run.body.id}`, { auth: org.token })).body.belowMinimum, heldBack, 'kept with the run');
    assert.equal(run.body.belowMinimumCount, 1);
    assert.equal((await balance(org)).available, 500, 'USD stays below its minimum of 5000');
  });

  it('lists the first 100 balances it held back and counts them all, so a long tail of small earners cannot outgrow the run', async () => {
    const org = await setupOrg('minimum-tail@example.com');
    const scope = system(org.id);
    const { firestore } = await import('../functions/adapters/firestore');
    const batch = firestore().batch();
    const ids = Array.from({ length: 101 }, (_, i) => `aff_tail${String(i).padStart(3, '0')}`);
    for (const id of ids) {
      batch.set(scope.collection('affiliates').doc(id), { id, name: id, email: `${id}@pub.example`, status: 'active', payoutCurrency: 'USD', minimumPayout: 5000, createdAt: new Date().toISOString() });
      batch.set(scope.collection('ledger').doc(`le_${id}`), { id: `le_${id}`, affiliateId: id, conversionId: null, campaignId: null, type: 'commission', amount: 100, currency: 'USD', status: 'approved', payoutId: null, createdAt: new Date().toISOString() });
    }
    await batch.commit();
    const run = await s.call('POST', `/v1/orgs/${org.id}/payout-runs`, { auth: org.token, body: {} });
    assert.equal(run.status, 201, run.text);
    assert.deepEqual([run.body.belowMinimum.length, run.body.belowMinimumCount, run.body.belowMinimum[0]], [100, 101, { affiliateId: ids[0], currency: 'USD', amount: 100, minimum: 5000 }]);
    const stored = await s.call('GET', `/v1/orgs/${org.id}/payout-runs/${run.body.id}`, { auth: org.token });
    assert.deepEqual([stored.body.status, stored.body.belowMinimum.length, stored.body.belowMinimumCount], ['completed', 100, 101]);
  });

  it('cancels a payout whose claim ends below the minimum because an entry was reversed after planning', async () => {
    const org = await setupOrg('minimum-claim@example.com', { minimumPayout: 1000 });
    const [first, second] = [await approved(org, 'mc-1'), await approved(org, 'mc-2')];
    await onboard(org);
    // The run reads the affiliates right after planning from the approved entries, and claims after that.
    const { firestore } = await import('../functions/adapters/firestore');
    const db = firestore();
    const getAll = db.getAll.bind(db);
    let reversed = false;
    db.getAll = async (...args: Parameters<typeof db.getAll>) => {
      if (!reversed && args.some((a) => a instanceof Object && 'path' in a && String(a.path).includes('/affiliates/'))) {
        reversed = true;
        assert.equal((await patch(org, second, { status: 'reversed', reason: 'chargeback' })).status, 200);
      }
      return getAll(...args);
    };
    let r;
    try {
      r = await runPayouts(system(org.id), { trigger: 'manual' });
    } finally {
      db.getAll = getAll;
    }
    assert.ok(reversed, 'the reversal came between planning and claiming');
    assert.deepEqual(r.payouts.map((p) => [p.amount, p.status, p.reason]), [[500, 'cancelled', 'below_minimum']]);
    assert.equal(transfersTo(org, org.affiliate).length, 0, '500 is below the minimum of 1000: nothing is sent');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 500, paid: 0, available: 500 });
    assert.equal(await conversionStatus(org, first), 'approved');
  });
});

describe('Stripe events', () => {
  it('returns a partial reversal as a credit once, then the rest when the transfer is reversed in full', async () => {
    const org = await setupOrg('partial-reversal@example.com');
    const conversions = [await approved(org, 'pr-1'), await approved(org, 'pr-2')];
    await onboard(org);
    const [payout] = (await runPayouts(system(org.id), { trigger: 'manual' })).payouts;
    assert.equal(payout!.amount, 1000);
    assert.equal(await reversal('evt_pr_other_transfer', payout as unknown as Row, org.id, 1000, 'tr_someone_else'), 'ignored');
    assert.equal((await balance(org)).available, 0);

    assert.equal(await reversal('evt_pr_1', payout as unknown as Row, org.id, 400), 'applied');
    // The 400 Stripe took back leaves `paid` (the affiliate kept 600) and waits in the balance to be paid again.
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 400, paid: 600, available: 400 });
    // Stripe may deliver the same state again under another event id.
    assert.equal(await reversal('evt_pr_1_again', payout as unknown as Row, org.id, 400), 'ignored');
    assert.equal((await balance(org)).available, 400);
    assert.equal((await payoutsOf(org, org.affiliate))[0]!.status, 'paid');

    assert.equal(await reversal('evt_pr_full', payout as unknown as Row, org.id, 1000), 'applied');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 1000, paid: 0, available: 1000 }, 'nothing of the payout was kept');
    assert.equal((await payoutsOf(org, org.affiliate))[0]!.status, 'reversed');
    for (const c of conversions) assert.equal(await conversionStatus(org, c), 'paid', 'the conversions were paid; the credits carry the returned money');
  });

  it('puts every entry of a large payout back in the balance when its transfer is reversed in full, finishing on redelivery after a failure halfway', async () => {
    const org = await setupOrg('large-full-reversal@example.com');
    const payout = await largePaidPayout(org, 'lfr', 450);
    const event = reversedInFull(payout, 'evt_lfr_1');
    // The transaction that records the reversal goes through; the next one, restoring the rest, fails.
    const failed = await failingTransactionsAfter(1, () => post(event));
    assert.equal(failed.status, 500, 'Stripe is to deliver it again');
    assert.equal((await payoutsOf(org, org.affiliate))[0]!.status, 'reversed');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 200 * 500, paid: 250 * 500, available: 200 * 500 }, 'the first chunk is back');
    assert.equal(await deliver(event), 'duplicate');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 450 * 500, paid: 0, available: 450 * 500 }, 'all of it owed again');
    assert.equal((await system(org.id).collection('conversions').where('status', '==', 'paid').get()).size, 0, 'no conversion left paid');
    assert.equal((await payoutsOf(org, org.affiliate))[0]!.restoringEntries, undefined);
    const [again] = (await runPayouts(system(org.id), { trigger: 'manual' })).payouts;
    assert.equal(again!.amount, 450 * 500);
    assert.equal(received(org, org.affiliate), 450 * 500, 'paid again once');
  });

  it("finishes restoring a large payout's entries in the next payout run when the webhook stopped halfway", async () => {
    const org = await setupOrg('large-full-reversal-run@example.com');
    const payout = await largePaidPayout(org, 'lfrr', 450);
    const event = reversedInFull(payout, 'evt_lfrr_1');
    assert.equal((await failingTransactionsAfter(2, () => post(event))).status, 500);
    assert.equal((await balance(org)).paid, 50 * 500, 'two chunks back, one left');
    // Stripe gave up (or has not come back yet): the organisation's next run finishes it before planning, and pays
    // it all once.
    const [again] = (await runPayouts(system(org.id), { trigger: 'manual' })).payouts;
    assert.equal(again!.amount, 450 * 500);
    assert.equal((await payoutsOf(org, org.affiliate)).find((p) => p.id === payout.id)!.restoringEntries, undefined);
    assert.equal(received(org, org.affiliate), 450 * 500);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 450 * 500, available: 0 });
  });

  it('keeps a conversion reversed after payment reversed when the whole transfer comes back', async () => {
    const org = await setupOrg('full-reversal@example.com');
    const conversion = await approved(org, 'fr-1');
    await onboard(org);
    const [payout] = (await runPayouts(system(org.id), { trigger: 'manual' })).payouts;
    assert.equal((await patch(org, conversion, { status: 'reversed', reason: 'chargeback' })).status, 200);
    assert.equal(await reversal('evt_fr_1', payout as unknown as Row, org.id, 500), 'applied');
    assert.equal(await conversionStatus(org, conversion), 'reversed');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 0, available: 0 }, 'the returned commission nets off its clawback');
  });

  it('counts as paid only what the affiliate kept after a partial reversal, once the returned money is paid again', async () => {
    const org = await setupOrg('reversal-paid@example.com');
    await approved(org, 'rpd-1');
    await approved(org, 'rpd-2');
    await onboard(org);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.equal(await reverseAtStripe('evt_rpd_1', onlyTransfer(org, org.affiliate).id as string, 400), 'applied');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 400, paid: 600, available: 400 });
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.equal(received(org, org.affiliate), 1000);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 1000, available: 0 }, 'paid is what the affiliate received');
    // The payout of the returned 400 is reversed in full in its turn: the 400 is owed again, not lost.
    const second = (await payoutsOf(org, org.affiliate)).find((p) => p.amount === 400 && p.status === 'paid')!;
    assert.equal(await reverseAtStripe('evt_rpd_2', second.transferId as string, 400), 'applied');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 400, paid: 600, available: 400 });
  });

  it('marks paid, and approved again after a full reversal, a conversion earned only through its volume tier', async () => {
    const org = await setupOrg('tier-only@example.com', { payout: { type: 'cpa', amount: 0, tiers: [{ minConversions: 2, amount: 700 }] } });
    const first = await approved(org, 'to-1');
    const second = await approved(org, 'to-2');
    await onboard(org);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.deepEqual((await payoutsOf(org, org.affiliate)).map((p) => [p.status, p.amount]), [['paid', 700]]);
    // The first earned nothing, so no payout covers it; the second was paid by its tier adjustment alone.
    assert.deepEqual([await conversionStatus(org, first), await conversionStatus(org, second)], ['approved', 'paid']);
    assert.equal(await reverseAtStripe('evt_tier_only_1', onlyTransfer(org, org.affiliate).id as string, 700), 'applied');
    assert.equal(await conversionStatus(org, second), 'approved', 'owed again, as its money is');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 700, paid: 0, available: 700 });
  });

  it('applies a reversal that arrives before a crashed run recorded its transfer, when the next run settles it', async () => {
    const org = await setupOrg('reversal-early@example.com');
    await approved(org, 're-1');
    await approved(org, 're-2');
    await onboard(org);
    setProvider(crashingFor(org.affiliate));
    await assert.rejects(runPayouts(system(org.id), { trigger: 'manual' }), /process killed/);
    const [payout] = await payoutsOf(org, org.affiliate);
    assert.deepEqual([payout!.status, payout!.transferId], ['claimed', null]);
    const transfer = onlyTransfer(org, org.affiliate);
    assert.equal(await reverseAtStripe('evt_re_1', transfer.id as string, 400), 'parked', 'the transfer is ours: kept for when the payout is settled');
    assert.equal(await reverseAtStripe('evt_re_1', transfer.id as string, 400), 'duplicate');
    assert.equal(await reverseAtStripe('evt_re_1_again', transfer.id as string, 400), 'ignored', 'the same total under another event id adds nothing');

    setProvider(stripeProvider);
    await runPayouts(system(org.id), { trigger: 'manual' });
    const settled = (await system(org.id).collection('payouts').doc(payout!.id as string).get()).data()!;
    assert.deepEqual([settled.status, settled.transferId, settled.amountReversed], ['paid', transfer.id, 400]);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.equal(received(org, org.affiliate), 1000, 'the reversed 400 was paid again');
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 1000, available: 0 });
  });

  it('applies a full reversal delivered between Stripe\'s answer and the run recording it', async () => {
    const org = await setupOrg('reversal-midway@example.com');
    const conversion = await approved(org, 'rw-1');
    await onboard(org);
    const outcomes: string[] = [];
    setProvider({ ...stripeProvider, transfer: async (req) => {
      const out = await stripeProvider.transfer(req);
      assert.ok(out.ok);
      outcomes.push(await reverseAtStripe('evt_rw_1', out.transferId, 500));
      return out;
    } });
    const [payout] = (await runPayouts(system(org.id), { trigger: 'manual' })).payouts;
    assert.deepEqual(outcomes, ['parked']);
    const settled = (await system(org.id).collection('payouts').doc(payout!.id).get()).data()!;
    assert.deepEqual([settled.status, settled.reason], ['reversed', 'transfer_reversed']);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 500, paid: 0, available: 500 }, 'the money is back in the balance');
    assert.equal(await conversionStatus(org, conversion), 'approved');
    setProvider(stripeProvider);
    await runPayouts(system(org.id), { trigger: 'manual' });
    assert.equal(received(org, org.affiliate), 500);
    assert.deepEqual(await balance(org), { currency: 'USD', pending: 0, approved: 0, paid: 500, available: 0 });
  });

  it('ignores an account.updated older than the one already applied', async () => {
    const org = await setupOrg('account-order@example.com');
    const account = (await s.call('POST', `/v1/orgs/${org.id}/affiliates/${org.affiliate}/stripe/onboarding`, { auth: org.token })).body.affiliate.stripeAccountId as string;
    const now = Math.floor(Date.now() / 1000);
    const update = (id: string, created: number, enabled: boolean) => deliver({ id, type: 'account.updated', created, account, data: { object: { id: account, object: 'account', payouts_enabled: enabled } } });
    assert.equal(await update('evt_acct_new', now, false), 'applied');
    assert.equal(await update('evt_acct_old', now - 60, true), 'ignored');
    assert.equal((await s.call('GET', `/v1/orgs/${org.id}/affiliates/${org.affiliate}`, { auth: org.token })).body.payoutsEnabled, false);
    assert.equal(await update('evt_acct_newer', now + 1, true), 'applied');
    assert.equal((await s.call('GET', `/v1/orgs/${org.id}/affiliates/${org.affiliate}`, { auth: org.token })).body.payoutsEnabled, true);
  });

  it('settles two account.updated events of one second that disagree by reading the account from Stripe', async () => {
    const org = await setupOrg('account-tie@example.com');
    const account = (await s.call('POST', `/v1/orgs/${org.id}/affiliates/${org.affiliate}/stripe/onboarding`, { auth: org.token })).body.affiliate.stripeAccountId as string;
    stripe.completeOnboarding(account, { payoutsEnabled: true });
    // Both snapshots stamped with the same second (later than onboarding's own read), the newer delivered first.
    const at = Math.floor(Date.now() / 1000) + 30;
    const event = (id: string, enabled: boolean) => ({ id, type: 'account.updated', created: at, account, data: { object: { id: account, object: 'account', payouts_enabled: enabled } } });
    const enabled = async () => (await s.call('GET', `/v1/orgs/${org.id}/affiliates/${org.affiliate}`, { auth: org.token })).body.payoutsEnabled as boolean;
    assert.equal(await deliver(event('evt_tie_new', true)), 'applied');
    // Stripe cannot be read on the older one's first delivery: nothing is recorded and Stripe is asked to send it again.
    stripe.failNext(`/v1/accounts/${account}`, { status: 500, body: { error: { type: 'api_error', message: 'An unknown error occurred' } } }, 2);
    const payload = JSON.stringify({ object: 'event', ...event('evt_tie_old', false) });
    const failed = await fetch(`${s.baseUrl}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': stripeLib.webhooks.generateTestHeaderString({ payload, secret: webhookSecret }) }, body: payload });
    assert.equal(failed.status, 500);
    assert.equal(await enabled(), true);
    assert.equal(await deliver(event('evt_tie_old', false)), 'applied', 'the redelivery reads the account');
    assert.equal(await enabled(), true, 'Stripe says payouts are enabled: the older snapshot does not stand');
    assert.equal(await deliver(event('evt_tie_old', false)), 'duplicate');
    // Stripe refusing the read for good (an account no longer connected): recorded as seen, not a 500 for days.
    stripe.failNext(`/v1/accounts/${account}`, { status: 404, body: { error: { type: 'invalid_request_error', code: 'resource_missing', message: `No such account: '${account}'` } } });
    assert.equal(await deliver(event('evt_tie_gone', false)), 'ignored');
    assert.equal(await enabled(), true);
    assert.equal(await deliver(event('evt_tie_gone', false)), 'duplicate');
  });
});

describe('scheduled payouts', () => {
  it('runs every due organisation even when an earlier one fails, then reports the failure', async () => {
    const { runDueScheduledPayouts } = await import('../functions/services/payouts-job');
    const now = new Date(); // the job runs for this moment, so a run across UTC midnight keeps its day
    const isoWeekday = ((now.getUTCDay() + 6) % 7) + 1;
    // Org ids sort newest first, so the organisation created last is run first.
    const later = await setupOrg('sched-later@example.com');
    const first = await setupOrg('sched-first@example.com');
    assert.ok(first.id < later.id);
    for (const org of [later, first]) {
      await approved(org, `sc-${org.id}`);
      await onboard(org);
      await s.call('PATCH', `/v1/orgs/${org.id}`, { auth: org.token, body: { payoutSchedule: { frequency: 'weekly', day: isoWeekday } } });
    }
    // Another run holds the first organisation's lease.
    await system(first.id).collection('locks').doc('payout-run').set({ runId: 'run_elsewhere', token: 'elsewhere', expiresAt: Date.now() + 60_000 });
    await assert.rejects(runDueScheduledPayouts(now), new RegExp(first.id));
    assert.equal(transferred(later, later.affiliate), 500);
    assert.equal(transferred(first, first.affiliate), 0);
  });
});
