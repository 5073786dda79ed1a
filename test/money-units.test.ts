import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { currencySchema, formatMinor, minorUnitDigits, parseMajorAmount } from '../shared/money';

/** The ledger's minor unit per currency: what every stored amount means, on whatever runtime reads it. */
describe('minor units', () => {
  it("are ISO 4217's, whatever the runtime's ICU says", () => {
    // CLDR 48 (ICU 78) gives HUF, COP, IDR and PKR no decimals, and IQD none; earlier releases gave them two.
    // A stored 1,200,000 HUF must be 12,000.00 Ft on both.
    const iso: [string, number][] = [['USD', 2], ['EUR', 2], ['JPY', 0], ['KRW', 0], ['ISK', 0], ['UGX', 0], ['HUF', 2], ['COP', 2], ['IDR', 2], ['PKR', 2], ['MGA', 2], ['BHD', 3], ['IQD', 3], ['KWD', 3], ['LYD', 3], ['CLF', 4]];
    for (const [currency, digits] of iso) assert.equal(minorUnitDigits(currency), digits, currency);
    const format = Intl.NumberFormat;
    // A runtime whose ICU answers otherwise changes nothing.
    (Intl as { NumberFormat: unknown }).NumberFormat = function () {
      return { resolvedOptions: () => ({ maximumFractionDigits: 7 }), format: () => '?' };
    };
    try {
      for (const [currency, digits] of iso) assert.equal(minorUnitDigits(currency), digits, currency);
      assert.equal(parseMajorAmount('12000.50', 'HUF'), 1_200_050);
      assert.equal(formatMinor(1_200_050, 'HUF'), '12000.50');
    } finally {
      Intl.NumberFormat = format;
    }
  });

  it('parses and formats amounts in that unit', () => {
    assert.equal(parseMajorAmount('49.99', 'USD'), 4_999);
    assert.equal(parseMajorAmount('1500', 'JPY'), 1_500);
    assert.equal(parseMajorAmount('1500.5', 'JPY'), undefined, 'yen have no decimals');
    assert.equal(parseMajorAmount('1.234', 'KWD'), 1_234);
    assert.equal(formatMinor(1_234, 'KWD'), '1.234');
    assert.equal(formatMinor(-5, 'USD'), '-0.05');
  });

  it('takes currency codes in use, and not the units of account, metals or test codes ISO 4217 gives no minor unit', () => {
    assert.equal(currencySchema.parse('usd'), 'USD');
    for (const code of ['XDR', 'XSU', 'XAU', 'XXX', 'ABC']) assert.equal(currencySchema.safeParse(code).success, false, code);
  });
});
