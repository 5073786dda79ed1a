import { FieldValue, type DocumentData, type Transaction } from '@google-cloud/firestore';
import { payoutFor } from '../../shared/domain/commission';
import { tierMonth, type LedgerEntry } from '../../shared/domain/ledger';
import type { PayoutRule } from '../../shared/domain/schemas';
import { conflict, notFound } from '../../shared/errors';
import { deterministicId } from '../../shared/ids';
import { publishConversionVersion, recordedAfter, transitionVersion } from './conversion-analytics';
import { counterRef } from './counters';
import type { AuditInput, OrgScope } from './tenancy';

/**
 * Moves a conversion through its lifecycle, with its ledger entries, in one transaction:
 * pending → approved | rejected; approved | paid → reversed. Anything else is a 409.
 */
export type Transition = { status: 'approved' | 'rejected' | 'reversed'; reason?: string | undefined };

const allowed: Record<string, Transition['status'][]> = {
  pending: ['approved', 'rejected'],
  approved: ['reversed'],
  paid: ['reversed'],
};

/**
 * A conversion's ledger entries, read by their deterministic ids rather than by a query: a query inside a
 * transaction locks far more (the emulator deadlocks parallel approvals on it), and costs a scan.
 */
export const ledgerEntryTypes = ['commission', 'tier_adjustment', 'clawback'] as const;
export const ledgerEntryId = (conversionId: string, type: (typeof ledgerEntryTypes)[number]) => deterministicId('led', conversionId, type);

async function entriesOf(tx: Transaction, scope: OrgScope, conversionId: string, types: readonly (typeof ledgerEntryTypes)[number][]): Promise<LedgerEntry[]> {
  const snaps = await tx.getAll(...types.map((t) => scope.collection('ledger').doc(ledgerEntryId(conversionId, t))));
  return snaps.filter((d) => d.exists).map((d) => d.data() as LedgerEntry);
}

/**
 * `publish: false` leaves the new analytics version to the caller's sweep (publishDueConversionAnalytics): the
 * commissions job sends its approvals together once it has made them.
 */
export async function transitionConversion(
  scope: OrgScope,
  conversionId: string,
  change: Transition,
  now = new Date(),
  { publish = true }: { publish?: boolean } = {},
): Promise<DocumentData> {
  const next = await scope.transact(async (tx, audit) => applyTransition(tx, scope, conversionId, change, now, audit));
  if (publish) {
    // The transition stands whether or not this succeeds: the version stays due and the sweep sends it.
    await publishConversionVersion(scope, next).catch((err: unknown) =>
      console.error(JSON.stringify({ severity: 'WARNING', message: 'conversion analytics publish deferred to the sweep', conversion: conversionId, error: String(err) })),
    );
  }
  return next;
}

/** The transition inside a caller's transaction. */
export async function applyTransition(
  tx: Transaction,
  scope: OrgScope,
  conversionId: string,
  change: Transition,
  now: Date,
  audit: (e: AuditInput) => void,
): Promise<DocumentData> {
  const ref = scope.collection('conversions').doc(conversionId);
  const snap = await tx.get(ref);
  if (!snap.exists) throw notFound('Conversion');
  const conv = snap.data()!;
  if (!allowed[conv.status]?.includes(change.status)) {
    throw conflict(`A ${conv.status} conversion cannot become ${change.status}; allowed: ${(allowed[conv.status] ?? []).join(', ') || 'none'}`);
  }
  // A pending conversion has only its commission entry; adjustments and clawbacks exist only later.
  const entries = await entriesOf(tx, scope, conversionId, change.status === 'reversed' ? ledgerEntryTypes : ['commission']);
  const at = now.toISOString();
  const ledger = scope.collection('ledger');
  const tierRef = conv.campaignId ? scope.collection('tierCounters').doc(`${conv.campaignId}_${conv.affiliateId}_${tierMonth(conv.createdAt)}`) : undefined;
  const booked = conv.payout as number;

  // Every read comes before the first write, as Firestore's transactions require.
  let payout = booked;
  let count = 1;
  if (change.status === 'approved') {
    // Volume tiers: this conversion is priced at the tier its month's approved count reaches with it (there is
    // a commission to adjust only where there is an affiliate).
    if (tierRef) count = (((await tx.get(tierRef)).get('approved') as number | undefined) ?? 0) + 1;
    const rule = conv.payoutRule as PayoutRule | null;
    if (rule && conv.affiliateId) payout = payoutFor(rule, conv.amount as number | null, count);
  }
  // What the conversion stops or starts counting for: a rejection or reversal takes it out of the live
  // counters and gives its room under the campaign's caps back; a volume tier changes its payout in both.
  const worth = change.status === 'approved' ? { conversions: 0, revenue: 0, payout: payout - booked } : { conversions: -1, revenue: -(conv.revenue as number), payout: -booked };
  const moves = worth.conversions !== 0 || worth.payout !== 0;
  const usageIds = moves ? ((conv.capUsageIds as string[] | undefined) ?? []) : [];
  // A usage document gone to its TTL belongs to a window long closed: nothing left to give back there.
  const usageDocs = usageIds.length ? (await tx.getAll(...usageIds.map((id) => scope.collection('capUsage').doc(id)))).filter((d) => d.exists) : [];

  if (change.status === 'approved') {
    if (tierRef) tx.set(tierRef, { approved: count, campaignId: conv.campaignId, affiliateId: conv.affiliateId, month: tierMonth(conv.createdAt) }, { merge: true });
    for (const e of entries.filter((x) => x.status === 'pending')) tx.update(ledger.doc(e.id), { status: 'approved', approvedAt: at });
    if (payout !== booked) {
      const id = ledgerEntryId(conversionId, 'tier_adjustment');
      tx.create(ledger.doc(id), {
        id, affiliateId: conv.affiliateId, conversionId, campaignId: conv.campaignId, type: 'tier_adjustment', amount: payout - booked,
        currency: conv.currency, status: 'approved', payoutId: null, createdAt: at, reason: `volume tier reached at ${count} approved conversions this month`,
      });
    }
  } else if (change.status === 'rejected') {
    for (const e of entries.filter((x) => x.status === 'pending')) tx.update(ledger.doc(e.id), { status: 'rejected', reason: change.reason ?? null });
  } else {
    // Unclaimed money is simply cancelled; money already claimed by a payout or paid is clawed back.
    let clawback = 0;
    for (const e of entries) {
      if (e.status === 'approved') tx.update(ledger.doc(e.id), { status: 'reversed', reason: change.reason ?? null });
      else if (e.status === 'claimed' || e.status === 'paid') clawback += e.amount;
    }
    if (clawback !== 0 && conv.affiliateId) {
      const id = ledgerEntryId(conversionId, 'clawback');
      tx.create(ledger.doc(id), {
        id, affiliateId: conv.affiliateId, conversionId, campaignId: conv.campaignId, type: 'clawback', amount: -clawback,
        currency: conv.currency, status: 'approved', payoutId: null, createdAt: at, reason: change.reason ?? 'conversion reversed after payment',
      });
    }
    if (tierRef) tx.set(tierRef, { approved: FieldValue.increment(-1) }, { merge: true });
  }

  for (const d of usageDocs) tx.update(d.ref, { conversions: FieldValue.increment(worth.conversions), payout: FieldValue.increment(worth.payout) });
  if (moves && conv.campaignId && conv.affiliateId) {
    // (The report follows through the analytics version below.)
    const c = counterRef(scope, conv.createdAt as string, conv.campaignId as string, conv.affiliateId as string, conversionId);
    const currency = conv.currency as string;
    tx.set(c.ref, {
      ...c.base, conversions: FieldValue.increment(worth.conversions),
      revenue: { [currency]: FieldValue.increment(worth.revenue) }, payout: { [currency]: FieldValue.increment(worth.payout) },
    }, { merge: true });
  }

  const next = {
    // decidedAt: a status set after booking, which no postback re-books (shared/domain/rebooking.ts).
    ...conv, status: change.status, payout, updatedAt: at, decidedAt: at,
    // The report counts the conversion as this version says once it is published (conversion-analytics.ts).
    analytics: transitionVersion(conversionId, change.status, conv.revenue as number, payout, recordedAfter(conv, at)), analyticsDue: true,
    reasons: change.reason ? [...(conv.reasons as string[]), change.reason] : conv.reasons,
    ...(change.status === 'approved' ? { approvedAt: at } : {}),
  };
  tx.set(ref, next);
  audit({ action: `conversion.${change.status === 'approved' ? 'approve' : change.status === 'rejected' ? 'reject' : 'reverse'}`, target: { type: 'conversion', id: conversionId }, changes: { status: { from: conv.status, to: change.status }, ...(change.reason ? { reason: change.reason } : {}) } });
  return next;
}
