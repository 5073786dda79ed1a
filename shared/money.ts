import { z } from 'zod';

/**
 * Money is always an integer number of minor units with an ISO 4217 currency, in the minor unit ISO 4217 gives it
 * (JPY 0 digits, USD 2, BHD 3). The digits are fixed here, not read from ICU: CLDR changes its own from release to
 * release (CLDR 48, in ICU 78, took HUF, COP, IDR and PKR from 2 to 0), and an amount stored on one runtime must
 * mean the same on the next, or a payout would be sent at a hundred times its value after an upgrade. Every
 * currency not listed has 2.
 */
const isoMinorDigits: Readonly<Record<string, number>> = {
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0, UGX: 0, UYI: 0, VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3,
  CLF: 4, UYW: 4,
};
/** Codes ISO 4217 gives no minor unit: units of account (SDR, Sucre), metals and test codes, never paid out. */
const noMinorUnit = new Set(['XAG', 'XAU', 'XBA', 'XBB', 'XBC', 'XBD', 'XDR', 'XPD', 'XPT', 'XSU', 'XTS', 'XUA', 'XXX']);
/** The codes in use that the runtime knows (ICU's list, which follows ISO 4217's current codes). */
const knownCurrencies = new Set(Intl.supportedValuesOf('currency').filter((c) => !noMinorUnit.has(c)));

export const currencySchema = z
  .string()
  .transform((s) => s.toUpperCase())
  .refine((s) => knownCurrencies.has(s), { message: 'must be an ISO 4217 currency code such as USD or EUR' });

export type Currency = string;

export const minorUnitsSchema = z.number().int('must be an integer number of minor units (e.g. cents)').min(0);

/**
 * The most one sale, or one commission, may be: 10^13 minor units ($100 billion, or IDR 100 billion, about $6
 * million, in a currency of small units). Far past any real sale, and far enough below 2^53 that sums over many
 * of them (a report's totals) stay exact. Only for one sale's amounts: caps and Stripe's totals are sums.
 */
export const maxSaleMinor = 10 ** 13;
export const saleAmountSchema = minorUnitsSchema.max(maxSaleMinor, `must be at most ${maxSaleMinor} minor units`);

export function minorUnitDigits(currency: Currency): number {
  return isoMinorDigits[currency] ?? 2;
}

/**
 * Parses an amount as advertisers send it ("49.99", in the major unit) into minor units, exactly (no
 * floating point). Returns undefined for anything that is not a plain non-negative decimal with at most the
 * currency's number of fraction digits, not counting trailing zeros: shop systems send "49.990" or
 * "1500.00" JPY, which are exact.
 */
const majorAmount = /^(\d{1,15})(?:\.(\d+))?$/;

/** Whether the text is written as an amount in a major unit, whatever currency's decimals it would need. */
export function isMajorAmount(text: string): boolean {
  return majorAmount.test(text.trim());
}

export function parseMajorAmount(text: string, currency: Currency): number | undefined {
  const m = majorAmount.exec(text.trim());
  if (!m) return undefined;
  const digits = minorUnitDigits(currency);
  const fraction = (m[2] ?? '').replace(/0+$/, '');
  if (fraction.length > digits) return undefined;
  const minor = Number(m[1]) * 10 ** digits + Number(fraction.padEnd(digits, '0') || '0');
  // Past 2^53 a number no longer holds every integer: the amount would not be the one sent.
  return Number.isSafeInteger(minor) ? minor : undefined;
}

/** Formats minor units as a major-unit decimal string ("4999" USD → "49.99"), for CSV exports. */
export function formatMinor(amount: number, currency: Currency): string {
  const digits = minorUnitDigits(currency);
  if (digits === 0) return String(amount);
  const sign = amount < 0 ? '-' : '';
  const abs = Math.abs(amount);
  const s = String(abs).padStart(digits + 1, '0');
  return `${sign}${s.slice(0, -digits)}.${s.slice(-digits)}`;
}

/**
 * value * numerator / denominator rounded half-to-even on minor units, in integer arithmetic, so a
 * revenue share of a large amount is exact and unbiased across many conversions.
 */
export function mulDivHalfEven(value: number, numerator: number, denominator: number): number {
  const product = BigInt(value) * BigInt(numerator);
  const d = BigInt(denominator);
  let q = product / d;
  const r = product % d;
  const twice = (r < 0n ? -r : r) * 2n;
  const absD = d < 0n ? -d : d;
  if (twice > absD || (twice === absD && q % 2n !== 0n)) q += product < 0n !== d < 0n ? -1n : 1n;
  return Number(q);
}
