import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it, mock } from 'node:test';
import Stripe from 'stripe';
import type { TestStack } from './helpers/stack';
import { moneyOrgs, startMoneyStack, webhookSecret, type MoneyOrg, type MoneyStack } from './helpers/money-org';

/**
 * What the Stripe webhook does with the object inside a correctly signed event: each handled event type's
 * `data.object` is checked against the fields it reads, a malformed one is recorded as seen and answered 2xx
 * (Stripe would otherwise redeliver it for days), and what is stored is shaped as the rest of the platform's
 * money (integer minor units, upper-case ISO currency). Through the real emulators and the Stripe stand-in.
 */
let money: MoneyStack;
let s: TestStack;
type Row = Record<string, unknown>;
let seenEvent: (id: string) => Promise<Row | undefined>;
let affiliateDoc: (org: MoneyOrg) => Promise<Row>;

const { setupOrg } = moneyOrgs(() => s);
const stripeLib = new Stripe('sk_test_unused');
/** A signed delivery as Stripe makes it; the status and body as answered. */
const deliver = async (event: Row): Promise<{ status: number; body: Row }> => {
  const payload = JSON.stringify({ object: 'event', api_version: '2025-04-30.basil', livemode: false, created: Math.floor(Date.now() / 1000), ...event });
  const r = await fetch(`${s.baseUrl}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': stripeLib.webhooks.generateTestHeaderString({ payload, secret: webhookSecret }) }, body: payload });
  return { status: r.status, body: (await r.json()) as Row };
};
const onboard = async (org: MoneyOrg): Promise<string> =>
  (await s.call('POST', `/v1/orgs/${org.id}/affiliates/${org.affiliate}/stripe/onboarding`, { auth: org.token })).body.affiliate.stripeAccountId as string;
/** A connected account's payout to its bank, trimmed from Stripe's example payout object (fixtures3.json). */
const bankPayout = (over: Row = {}): Row => ({
  id: 'po_1Pgc79B7WZ01zgkWu1KToYf4', object: 'payout', amount: 1100, arrival_date: 1234567890, automatic: true, currency: 'usd',
  destination: 'ba_1Pgc79B7WZ01zgkWoU5vBiXt', failure_code: null, failure_message: null, metadata: {}, method: 'standard', status: 'paid', type: 'bank_account', ...over,
});
/** The WARNING lines the webhook logged while `fn` ran (the platform runs in this process). */
const warningsDuring = async (fn: () => Promise<void>): Promise<Row[]> => {
  const spy = mock.method(console, 'error', () => undefined);
  try {
    await fn();
    return spy.mock.calls.map((c) => { try { return JSON.parse(String(c.arguments[0])) as Row; } catch { return {}; } }).filter((l) => l.severity === 'WARNING');
  } finally {
    spy.mock.restore();
  }
};

before(async () => {
  money = await startMoneyStack();
  s = money.s;
  const { OrgScope, globalIndexDoc } = await import('../functions/services/tenancy');
  const { collections } = await import('../shared/names');
  seenEvent = async (id) => (await globalIndexDoc(collections.stripeEvents, id).get()).data();
  affiliateDoc = async (org) => (await OrgScope.system(org.id, 'test').collection('affiliates').doc(org.affiliate).get()).data()!;
});
beforeEach(() => money.setProvider(money.stripeProvider));
after(() => money.close());

describe('Stripe event objects', () => {
  it('records a signed account.updated without data.object.id as ignored_malformed with a 2xx, and its redelivery as a duplicate', async () => {
    const org = await setupOrg('no-account-id@example.com');
    const account = await onboard(org);
    const event = { id: 'evt_no_object_id', type: 'account.updated', account, data: { object: { object: 'account', payouts_enabled: true } } };
    let first: Awaited<ReturnType<typeof deliver>> | undefined;
    const warnings = await warningsDuring(async () => void (first = await deliver(event)));
    assert.equal(first!.status, 200, JSON.stringify(first!.body));
    assert.deepEqual(first!.body, { received: true, outcome: 'ignored_malformed' });
    assert.equal((await seenEvent('evt_no_object_id'))?.outcome, 'ignored_malformed');
    assert.equal((await affiliateDoc(org)).payoutsEnabled, false, 'nothing about the account was applied');
    assert.equal(warnings.length, 1);
    assert.deepEqual([warnings[0]!.eventId, warnings[0]!.type], ['evt_no_object_id', 'account.updated']);
    assert.ok((warnings[0]!.issues as { path: string }[]).some((i) => i.path === 'id'), JSON.stringify(warnings[0]));

    const again = await deliver(event);
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, { received: true, outcome: 'duplicate' });
  });

  it('stores a connected account\'s bank payout (payout.paid) with its currency upper-case', async () => {
    const org = await setupOrg('bank-payout@example.com');
    const account = await onboard(org);
    const created = Math.floor(Date.now() / 1000);
    const r = await deliver({ id: 'evt_bank_payout_paid', type: 'payout.paid', account, created, data: { object: bankPayout() } });
    assert.deepEqual([r.status, r.body.outcome], [200, 'applied']);
    assert.deepEqual((await affiliateDoc(org)).lastBankPayout, { id: bankPayout().id, status: 'paid', amount: 1100, currency: 'USD', failureCode: null, at: new Date(created * 1000).toISOString() });
  });

  it("keeps the newest bank payout when Stripe delivers an older event after it, and a payout's failure over its success", async () => {
    const org = await setupOrg('bank-payout-order@example.com');
    const account = await onboard(org);
    const t = Math.floor(Date.now() / 1000);
    const last = async () => (await affiliateDoc(org)).lastBankPayout as Row;
    const failed = bankPayout({ status: 'failed', failure_code: 'account_closed' });
    assert.equal((await deliver({ id: 'evt_bank_failed', type: 'payout.failed', account, created: t + 60, data: { object: failed } })).body.outcome, 'applied');
    // The success of the same payout, sent earlier, arrives late.
    assert.equal((await deliver({ id: 'evt_bank_paid_late', type: 'payout.paid', account, created: t, data: { object: bankPayout() } })).body.outcome, 'ignored');
    assert.deepEqual([(await last()).status, (await last()).failureCode], ['failed', 'account_closed']);
    // In the same second, the failure stands whichever comes second.
    assert.equal((await deliver({ id: 'evt_bank_paid_same_second', type: 'payout.paid', account, created: t + 60, data: { object: bankPayout() } })).body.outcome, 'ignored');
    assert.equal((await last()).status, 'failed');
    // A later payout replaces it.
    const next = bankPayout({ id: 'po_bank_next' });
    assert.equal((await deliver({ id: 'evt_bank_next', type: 'payout.paid', account, created: t + 120, data: { object: next } })).body.outcome, 'applied');
    assert.deepEqual([(await last()).id, (await last()).status], ['po_bank_next', 'paid']);
  });

  it('ignores malformed payout and transfer.reversed objects as ignored_malformed without changing anything', async () => {
    const org = await setupOrg('malformed-objects@example.com');
    const account = await onboard(org);
    const cases: [string, string, Row][] = [
      ['evt_payout_bad_currency', 'payout.failed', bankPayout({ currency: 'dollars', status: 'failed', failure_code: 'account_closed' })],
      ['evt_payout_fraction', 'payout.paid', bankPayout({ amount: 11.5 })],
      ['evt_payout_no_id', 'payout.paid', bankPayout({ id: '' })],
      ['evt_rev_string_amount', 'transfer.reversed', { id: 'tr_x', object: 'transfer', amount: 500, amount_reversed: '500', currency: 'usd', metadata: { orgId: org.id, payoutId: 'po_x' } }],
      ['evt_rev_over_amount', 'transfer.reversed', { id: 'tr_x', object: 'transfer', amount: 500, amount_reversed: 600, currency: 'usd', metadata: { orgId: org.id, payoutId: 'po_x' } }],
    ];
    for (const [id, type, object] of cases) {
      const r = await deliver({ id, type, account, data: { object } });
      assert.deepEqual([r.status, r.body.outcome], [200, 'ignored_malformed'], id);
      assert.equal((await seenEvent(id))?.outcome, 'ignored_malformed', id);
    }
    assert.equal((await affiliateDoc(org)).lastBankPayout, undefined);
    // A transfer that is not one of ours (no metadata of ours) stays a plain ignore, as does an unhandled type.
    assert.equal((await deliver({ id: 'evt_rev_foreign', type: 'transfer.reversed', data: { object: { id: 'tr_y', object: 'transfer', amount: 500, amount_reversed: 500, currency: 'usd', metadata: {} } } })).body.outcome, 'ignored');
    // Nor ids we could have sent: they would be Firestore paths (a 500, retried by Stripe for days).
    const pathy = await deliver({ id: 'evt_rev_pathy', type: 'transfer.reversed', data: { object: { id: 'tr_z', object: 'transfer', amount: 500, amount_reversed: 500, currency: 'usd', metadata: { orgId: `${org.id}/payouts/x`, payoutId: 'po/x' } } } });
    assert.deepEqual([pathy.status, pathy.body.outcome], [200, 'ignored']);
    assert.equal((await deliver({ id: 'evt_unhandled', type: 'charge.succeeded', data: { object: {} } })).body.outcome, 'ignored');
  });
});
