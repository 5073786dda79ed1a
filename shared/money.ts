import { z } from 'zod';

/**
 * Money is always an integer number of minor units with an ISO 4217 currency. The number of minor-unit
 * digits comes from ICU (bundled with Node), so JPY has 0, USD 2 and BHD 3 without a table to maintain.
 */
const knownCurrencies = new Set(Intl.supportedValuesOf('currency'));

export const currencySchema = z
  .string()
  .transform((s) => s.toUpperCase())
  .refine((s) => knownCurrencies.has(s), { message: 'must be an ISO 4217 currency code such as USD or EUR' });

export type Currency = string;

export const minorUnitsSchema = z.number().int('must be an integer number of minor units (e.g. cents)').min(0);

// Building an Intl.NumberFormat costs tens of microseconds; postbacks and reports ask for a handful of currencies.
const digitsByCurrency = new Map<Currency, number>();

export function minorUnitDigits(currency: Currency): number {
  let digits = digitsByCurrency.get(currency);
  if (digits === undefined) {
    digits = new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits ?? 2;
    digitsByCurrency.set(currency, digits);
  }
  return digits;
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
