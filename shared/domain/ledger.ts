/**
 * The commission ledger. Entries are never deleted and their amounts never change; a correction is a new
 * entry (a tier adjustment, a clawback). Each entry's `status` records where the money is:
 *
 *   pending ──approve──▶ approved ──claim──▶ claimed ──transfer──▶ paid
 *      └──reject──▶ rejected     └──reverse (unpaid)──▶ reversed
 *
 * A reversal of money already claimed or paid books a negative `clawback` entry, approved at once, which the
 * next payout run nets off. A balance is a sum of entries.
 */
export const ledgerStatuses = ['pending', 'approved', 'claimed', 'paid', 'rejected', 'reversed'] as const;
export type LedgerStatus = (typeof ledgerStatuses)[number];
/**
 * Where a payout is (functions/services/payout-runs.ts): `claiming` → `claimed` → `paid`, or through `releasing`
 * to `failed` (Stripe refused it) or `cancelled` (nothing left to send); `blocked` (the affiliate cannot be paid:
 * paused, blocked, no payout account); `reversed` (Stripe took the whole transfer back); `would_pay` only in a dry run.
 */
export const payoutStatuses = ['claiming', 'claimed', 'releasing', 'paid', 'failed', 'cancelled', 'blocked', 'reversed', 'would_pay'] as const;
/**
 * transfer_reversal: money Stripe took back from a paid transfer in part: a credit returned to the balance
 * (approved) and its negative twin on the reversed payout (paid), so `paid` is what the affiliate kept.
 */
export type LedgerEntryType = 'commission' | 'tier_adjustment' | 'clawback' | 'transfer_reversal';

/**
 * The conversions whose earnings these entries are, each once: their commissions and volume-tier adjustments. A
 * conversion booked at 0 and raised by a tier at approval has only the adjustment, and is paid by it all the same.
 */
export function conversionsEarnedBy(entries: readonly { get(field: string): unknown }[]): string[] {
  const earned = entries.filter((e) => e.get('type') === 'commission' || e.get('type') === 'tier_adjustment');
  return [...new Set(earned.map((e) => e.get('conversionId') as string))];
}

export interface LedgerEntry {
  id: string;
  affiliateId: string;
  /** Null for a transfer_reversal, which no conversion made. */
  conversionId: string | null;
  campaignId: string | null;
  type: LedgerEntryType;
  /** Minor units; negative for clawbacks and downward adjustments. */
  amount: number;
  currency: string;
  status: LedgerStatus;
  payoutId?: string | null;
  approvableAt?: string | null;
  createdAt: string;
  reason?: string | null;
}

export interface Balance {
  currency: string;
  /** Booked but not yet approved. */
  pending: number;
  /** Approved and not yet paid (including money claimed by a payout in progress). */
  approved: number;
  paid: number;
  /** What the next payout run may pay: approved, unclaimed, net of clawbacks (may be negative). */
  available: number;
}

/** The ledger statuses a balance is made of; rejected and reversed entries count nowhere. */
export const balanceStatuses = ['pending', 'approved', 'claimed', 'paid'] as const;
export type BalanceStatus = (typeof balanceStatuses)[number];

/** One currency's balance from the sum of its entries' amounts in each status. */
export function balanceOf(currency: string, sums: Record<BalanceStatus, number>): Balance {
  return { currency, pending: sums.pending, approved: sums.approved + sums.claimed, paid: sums.paid, available: sums.approved };
}

export interface PayoutCandidate {
  affiliateId: string;
  currency: string;
  amount: number;
  /**
   * In the order a run claims them: offsets (clawbacks, downward adjustments) first. A run that stops between two
   * claim transactions leaves its payout at what it claimed so far, and a later run sends that amount; claimed
   * offsets first, no part of the entries ever adds up to more than the whole, so the affiliate is never sent more
   * than it is owed.
   */
  entryIds: string[];
}

/** An affiliate's minimum payout: minor units of its payout currency. */
export interface PayoutMinimum {
  currency: string;
  amount: number;
}

/**
 * A minimum counts only in its own currency: 5000 means $50.00 in USD but ¥5,000 in JPY, so applied to every
 * currency it would hold some money back far too long and let other money through far too small. With no
 * exchange rate to hand, a currency other than the payout currency has no minimum: any positive net is paid,
 * rather than held back by a threshold the affiliate never set for it.
 */
export function minimumIn(currency: string, minimum: PayoutMinimum | undefined): number {
  return minimum && minimum.currency === currency ? minimum.amount : 0;
}

/** A positive balance a run leaves where it is because it is under the affiliate's minimum payout. */
export interface BelowMinimum {
  affiliateId: string;
  currency: string;
  amount: number;
  minimum: number;
}

/**
 * Which affiliates a run pays: per affiliate and currency, the net of approved unclaimed entries, when it
 * reaches the affiliate's minimum. Smaller and negative nets are carried forward untouched; the positive ones are
 * named in `belowMinimum`, so a run that pays nobody says why.
 */
export function planPayouts(entries: LedgerEntry[], minimumFor: (affiliateId: string) => PayoutMinimum | undefined): { pay: PayoutCandidate[]; belowMinimum: BelowMinimum[] } {
  const groups = new Map<string, PayoutCandidate & { earnings: string[] }>();
  for (const e of entries) {
    if (e.status !== 'approved' || e.payoutId) continue;
    const key = `${e.affiliateId}\u0000${e.currency}`;
    const g = groups.get(key) ?? { affiliateId: e.affiliateId, currency: e.currency, amount: 0, entryIds: [], earnings: [] };
    g.amount += e.amount;
    (e.amount < 0 ? g.entryIds : g.earnings).push(e.id);
    groups.set(key, g);
  }
  for (const g of groups.values()) g.entryIds.push(...g.earnings);
  const pay: PayoutCandidate[] = [];
  const belowMinimum: BelowMinimum[] = [];
  const sorted = [...groups.values()].sort((a, b) => a.affiliateId.localeCompare(b.affiliateId) || a.currency.localeCompare(b.currency));
  for (const g of sorted) {
    if (g.amount <= 0) continue;
    const minimum = minimumIn(g.currency, minimumFor(g.affiliateId));
    if (g.amount >= minimum) pay.push({ affiliateId: g.affiliateId, currency: g.currency, amount: g.amount, entryIds: g.entryIds });
    else belowMinimum.push({ affiliateId: g.affiliateId, currency: g.currency, amount: g.amount, minimum });
  }
  return { pay, belowMinimum };
}

/** UTC calendar month of a timestamp, the period volume tiers count in. */
export function tierMonth(iso: string): string {
  return iso.slice(0, 7);
}
