import type { Campaign } from './schemas';

/**
 * A campaign's conversion caps (`caps.daily` / `caps.monthly`: conversions, payout in the campaign's currency).
 * A conversion that would take a window past a cap is booked as rejected with the cap as its reason: recorded,
 * never credited, as advertisers expect of a capped offer. Windows are UTC days and months of the conversion's
 * own time. Click caps (`clicks`: billable clicks) are checked by the click function before it redirects.
 */
export type CapWindow = 'daily' | 'monthly';
export const capWindows: readonly CapWindow[] = ['daily', 'monthly'];

/** What a campaign has booked in one window. */
export interface CapUsage {
  conversions: number;
  payout: number;
}

/** The window a conversion at `occurredAt` (ISO, UTC) counts in: its day or its month. */
export function capPeriod(window: CapWindow, occurredAt: string): string {
  return window === 'daily' ? occurredAt.slice(0, 10) : occurredAt.slice(0, 7);
}

/** The windows in which this campaign caps conversions or payout. */
export function cappedWindows(caps: Campaign['caps'] | undefined): CapWindow[] {
  return capWindows.filter((w) => caps?.[w]?.conversions !== undefined || caps?.[w]?.payout !== undefined);
}

/**
 * The caps one more conversion paying `payout` would break, as rejection reasons (`daily_conversion_cap`,
 * `monthly_payout_cap`, …); none when it fits. A payout cap is never split: a conversion that does not fit
 * whole is rejected whole.
 */
export function capsBroken(caps: Campaign['caps'] | undefined, usage: Partial<Record<CapWindow, CapUsage>>, payout: number): string[] {
  const reasons: string[] = [];
  for (const w of capWindows) {
    const cap = caps?.[w];
    if (!cap) continue;
    const used = usage[w] ?? { conversions: 0, payout: 0 };
    if (cap.conversions !== undefined && used.conversions + 1 > cap.conversions) reasons.push(`${w}_conversion_cap`);
    if (cap.payout !== undefined && used.payout + payout > cap.payout) reasons.push(`${w}_payout_cap`);
  }
  return reasons;
}

/** Billable clicks a campaign takes per UTC day and month, where it caps them. */
export interface ClickCaps {
  daily?: number;
  monthly?: number;
}

export function clickCapsOf(caps: Campaign['caps'] | undefined): ClickCaps | undefined {
  const daily = caps?.daily?.clicks;
  const monthly = caps?.monthly?.clicks;
  return daily === undefined && monthly === undefined ? undefined : { daily, monthly };
}

/** Whether a campaign that has had `used` billable clicks this day and month has reached a click cap. */
export function clickCapReached(caps: ClickCaps, used: { daily: number; monthly: number }): boolean {
  return (caps.daily !== undefined && used.daily >= caps.daily) || (caps.monthly !== undefined && used.monthly >= caps.monthly);
}
