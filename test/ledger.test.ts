import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planPayouts, type LedgerEntry } from '../shared/domain/ledger';

const entry = (id: string, amount: number, over: Partial<LedgerEntry> = {}): LedgerEntry => ({
  id, affiliateId: 'aff_1', conversionId: `cnv_${id}`, campaignId: 'cmp_1', type: amount < 0 ? 'clawback' : 'commission',
  amount, currency: 'USD', status: 'approved', payoutId: null, createdAt: '2026-11-01T00:00:00.000Z', ...over,
});

describe('planning a payout run', () => {
  it('claims offsets before earnings, so no part of a payout adds up to more than the affiliate is owed', () => {
    // Ids put the earnings first, as document ids may. A run that stops between two claim transactions is later
    // paid what it had claimed: with the earnings first, that would be $600.00 of a $50.00 balance.
    const entries = [entry('a1', 20_000), entry('a2', 20_000), entry('a3', 20_000), entry('z1', -30_000), entry('z2', -25_000)];
    const { pay } = planPayouts(entries, () => ({ currency: 'USD', amount: 1_000 }));
    assert.equal(pay.length, 1);
    assert.equal(pay[0]!.amount, 5_000);
    assert.deepEqual(pay[0]!.entryIds, ['z1', 'z2', 'a1', 'a2', 'a3']);
    const amountOf = new Map(entries.map((e) => [e.id, e.amount]));
    let claimed = 0;
    for (const id of pay[0]!.entryIds) {
      claimed += amountOf.get(id)!;
      assert.ok(claimed <= pay[0]!.amount, `after ${id}: ${claimed} claimed of ${pay[0]!.amount}`);
    }
  });

  it('pays each affiliate and currency its net at or above its minimum, and names the positive ones below it', () => {
    const entries = [
      entry('b1', 4_000, { affiliateId: 'aff_2' }),
      entry('c1', 900, { currency: 'EUR' }),
      entry('c2', 6_000),
      entry('d1', -700, { affiliateId: 'aff_3' }),
      entry('e1', 9_999, { status: 'pending' }),
      entry('f1', 9_999, { payoutId: 'pay_x' }),
    ];
    const { pay, belowMinimum } = planPayouts(entries, () => ({ currency: 'USD', amount: 5_000 }));
    assert.deepEqual(pay.map((p) => [p.affiliateId, p.currency, p.amount, p.entryIds]), [['aff_1', 'EUR', 900, ['c1']], ['aff_1', 'USD', 6_000, ['c2']]]);
    assert.deepEqual(belowMinimum, [{ affiliateId: 'aff_2', currency: 'USD', amount: 4_000, minimum: 5_000 }]);
  });
});
