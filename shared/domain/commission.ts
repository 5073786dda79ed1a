import { mulDivHalfEven } from '../money';
import type { PayoutRule } from './schemas';

/**
 * What a conversion earns the affiliate and brings the network, in the conversion's minor units.
 * Percentages are applied in integer arithmetic and rounded half-to-even on minor units.
 *
 * Tiers: the rate is the highest tier whose minConversions the affiliate's approved conversions on the
 * campaign this calendar month have reached, counting this one. Crossing a tier prices this and later
 * conversions at the new rate; earlier conversions of the month keep the rate they were booked at (no
 * retroactive re-pricing), so a booked commission never changes after the fact.
 */
export function payoutFor(rule: PayoutRule, amount: number | null, approvedThisMonthIncludingThis = 1): number {
  const tier = [...(rule.tiers ?? [])].reverse().find((t) => approvedThisMonthIncludingThis >= t.minConversions);
  if (rule.type === 'cpa') return (tier as { amount?: number } | undefined)?.amount ?? rule.amount;
  const percent = (tier as { percent?: number } | undefined)?.percent ?? rule.percent;
  return percentOf(amount ?? 0, percent);
}

export function revenueFor(rule: { type: 'cpa'; amount: number } | { type: 'cps'; percent: number }, amount: number | null): number {
  return rule.type === 'cpa' ? rule.amount : percentOf(amount ?? 0, rule.percent);
}

/** percent has at most two decimals (validated), so basis points are exact integers. */
export function percentOf(amount: number, percent: number): number {
  return mulDivHalfEven(amount, Math.round(percent * 100), 10_000);
}
