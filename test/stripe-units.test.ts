import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fromStripeAmount, toStripeAmount } from '../functions/adapters/payouts/stripe-units';
import { stripeObjectSchemas } from '../functions/adapters/payouts/stripe-webhook';

describe("Stripe's amount unit", () => {
  it('converts ledger minor units to what Stripe counts and back, exactly', () => {
    // [currency, ledger minor units, Stripe amount]: ISO 4217 gives ISK no minor unit, Stripe counts it in hundredths;
    // HUF and IDR have two decimals in both; MGA two in ISO 4217 and none at Stripe; IQD three and two.
    for (const [currency, ledger, stripe] of [['USD', 4_999, 4_999], ['JPY', 1_500, 1_500], ['KWD', 1_250, 1_250], ['ISK', 5_000, 500_000], ['HUF', 1_200_000, 1_200_000], ['IDR', 1_500_000, 1_500_000], ['MGA', 250_000, 2_500], ['IQD', 12_340, 1_234]] as const) {
      assert.equal(toStripeAmount(ledger, currency), stripe, currency);
      assert.equal(fromStripeAmount(stripe, currency), ledger, currency);
    }
  });

  it("reads a webhook's amounts in the ledger's unit", () => {
    const reversed = stripeObjectSchemas['transfer.reversed'].parse({ id: 'tr_1', amount: 500_000, amount_reversed: 150_000, currency: 'isk', metadata: {} });
    assert.deepEqual([reversed.amount, reversed.amount_reversed, reversed.currency], [5_000, 1_500, 'ISK']);
    const bank = stripeObjectSchemas['payout.paid'].parse({ id: 'po_1', amount: 2_500, currency: 'mga', failure_code: null });
    assert.deepEqual([bank.amount, bank.currency], [250_000, 'MGA']);
  });
});
