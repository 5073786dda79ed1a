import { minorUnitDigits, type Currency } from '../../../shared/money';

/**
 * Stripe's API counts amounts in its own unit per currency, which is not always the ISO 4217 minor unit the
 * ledger keeps (shared/money.ts): two decimals unless the currency is one of Stripe's zero-decimal or
 * three-decimal ones (https://docs.stripe.com/currencies#zero-decimal, #three-decimal). ISK has no minor unit in
 * ISO 4217 but two decimals at Stripe (5,000 kr is `amount: 500000` there); MGA has two in ISO 4217 and none at
 * Stripe; IQD and LYD three in ISO 4217 and two at Stripe.
 */
const zeroDecimal = new Set(['BIF', 'CLP', 'DJF', 'GNF', 'JPY', 'KMF', 'KRW', 'MGA', 'PYG', 'RWF', 'UGX', 'VND', 'VUV', 'XAF', 'XOF', 'XPF']);
const threeDecimal = new Set(['BHD', 'JOD', 'KWD', 'OMR', 'TND']);

export function stripeDigits(currency: Currency): number {
  const c = currency.toUpperCase();
  return zeroDecimal.has(c) ? 0 : threeDecimal.has(c) ? 3 : 2;
}

/** Ledger minor units -> Stripe's amount. Exact: refuses an amount Stripe's unit cannot carry. */
export function toStripeAmount(amount: number, currency: Currency): number {
  const shift = stripeDigits(currency) - minorUnitDigits(currency.toUpperCase());
  if (shift >= 0) return amount * 10 ** shift;
  const scale = 10 ** -shift;
  if (amount % scale !== 0) throw new RangeError(`${amount} minor units of ${currency} are not a whole number of Stripe's units`);
  return amount / scale;
}

/**
 * Stripe's amount -> ledger minor units. Whatever we sent comes back exactly; a part Stripe's unit has and the
 * ledger's has not (a reversal of 0.50 kr) is left out, rounding towards zero: the ledger cannot hold it.
 */
export function fromStripeAmount(amount: number, currency: Currency): number {
  const shift = stripeDigits(currency) - minorUnitDigits(currency.toUpperCase());
  return shift >= 0 ? Math.trunc(amount / 10 ** shift) : amount * 10 ** -shift;
}
