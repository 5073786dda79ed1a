import { FieldPath, FieldValue, type DocumentReference, type DocumentSnapshot, type Transaction } from '@google-cloud/firestore';
import { conversionsEarnedBy } from '../../shared/domain/ledger';
import { deterministicId } from '../../shared/ids';
import { firestore } from '../adapters/firestore';
import type { OrgScope } from './tenancy';

/**
 * What Stripe took back from a transfer that paid one of our payouts, and how the ledger records it.
 *
 * Stripe's `amount_reversed` is the running total, so each reversal books only what it adds to the total recorded
 * on the payout (`amountReversed`): a redelivery, or the same state under another event id, adds nothing.
 *  - A full reversal, the first one, puts the payout's own entries back to approved (and their conversions back
 *    from paid to approved): the money is in the balance again, as if never paid. The transaction that records
 *    the reversal moves the first `restoreChunk` entries; a larger payout is marked `restoringEntries` and the rest
 *    move chunk by chunk after it (restoreReversedEntries), as settling a payout does: one transaction of every
 *    entry of a payout of tens of thousands of commissions would pass Firestore's 10 MiB request limit.
 *  - Anything else (a partial reversal, or the rest after partial ones) books two entries for the newly reversed
 *    money, keyed by the payout and the running total: a `transfer_reversal` credit, approved, that returns it to
 *    the balance for the next run to pay, and its negative twin, `paid` under the payout, that takes it out of what
 *    the payout paid. Without the twin, `paid` would count the reversed money twice once the credit is paid again
 *    (paid 1000, 400 reversed and repaid: paid 1400, while the affiliate received 1000).
 */
export interface TransferReversal {
  transferId: string;
  /** The transfer's amount, minor units. */
  amount: number;
  /** Stripe's running total reversed so far, minor units. */
  amountReversed: number;
}

/** Entries a reversal moves per transaction: an entry and its conversion each, as settling a payout does. */
const restoreChunk = 200;

/** A payout the run has not settled yet: its transfer may exist at Stripe while transferId is still null. */
export const unsettledPayoutStatuses: readonly string[] = ['claiming', 'claimed', 'releasing'];

/** The payout's entries, found outside the transaction (a query inside one locks far more); each is read again inside. */
export async function payoutEntryRefs(scope: OrgScope, payoutId: string): Promise<DocumentReference[]> {
  return (await scope.collection('ledger').where('payoutId', '==', payoutId).select().get()).docs.map((d) => d.ref);
}

/**
 * Reads, inside `tx`, what applying `reversal` to the settled payout needs (its transfer must be the payout's),
 * and returns the writes to make once every read is done, or undefined when the reversal adds nothing. `payoutFields`
 * go into the same update of the payout (a transaction writes each document once). The writes answer whether entries
 * are left to restore after this transaction (restoreReversedEntries).
 */
export async function readTransferReversal(
  tx: Transaction, scope: OrgScope, payout: DocumentSnapshot, reversal: TransferReversal, entryRefs: DocumentReference[],
): Promise<((at: string, payoutFields?: Record<string, unknown>) => boolean) | undefined> {
  const reversed = reversal.amountReversed;
  const before = (payout.get('amountReversed') as number | undefined) ?? (payout.get('status') === 'reversed' ? (payout.get('amount') as number) : 0);
  const added = reversed - before;
  if (added <= 0) return undefined;
  const full = reversed === reversal.amount;
  // A full reversal after partial ones would return the credits already booked a second time as entries.
  const restoreEntries = full && before === 0;
  const firstChunk = restoreEntries ? entryRefs.slice(0, restoreChunk) : [];
  const restore = await readRestore(tx, scope, payout.id, firstChunk);
  const more = restoreEntries && entryRefs.length > firstChunk.length;
  return (at, payoutFields = {}) => {
    if (restoreEntries) {
      restore();
      if (more) payoutFields = { ...payoutFields, restoringEntries: true };
    } else {
      const base = { affiliateId: payout.get('affiliateId'), conversionId: null, campaignId: null, type: 'transfer_reversal', currency: payout.get('currency'), reversedPayoutId: payout.id, createdAt: at };
      const credit = deterministicId('led', payout.id, 'transfer_reversal', String(reversed));
      tx.set(scope.collection('ledger').doc(credit), { ...base, id: credit, amount: added, status: 'approved', payoutId: null, reason: 'transfer reversed by Stripe' });
      const debit = deterministicId('led', payout.id, 'transfer_reversal_paid', String(reversed));
      tx.set(scope.collection('ledger').doc(debit), { ...base, id: debit, amount: -added, status: 'paid', payoutId: payout.id, paidAt: at, reason: 'transfer reversed by Stripe: taken back from this payout' });
    }
    tx.update(payout.ref, {
      amountReversed: reversed, ...(full ? { status: 'reversed', reason: 'transfer_reversed', reversedAt: at } : { reason: 'transfer_partially_reversed' }), ...payoutFields,
    });
    return more;
  };
}

/**
 * Reads, inside `tx`, the given entries of a payout reversed in full and their conversions; returns the writes that
 * put back to approved those the payout still holds as paid.
 */
async function readRestore(tx: Transaction, scope: OrgScope, payoutId: string, entryRefs: DocumentReference[]): Promise<() => void> {
  const entries = entryRefs.length
    // Every entry the payout paid, reversal credits of earlier payouts included (they were money paid out like any
    // other); not a negative twin booked on this payout, which cannot exist yet before any partial reversal.
    ? (await tx.getAll(...entryRefs)).filter((e) => e.exists && e.get('status') === 'paid' && e.get('payoutId') === payoutId && e.get('reversedPayoutId') !== payoutId)
    : [];
  const conversionIds = conversionsEarnedBy(entries);
  const conversions = conversionIds.length ? await tx.getAll(...conversionIds.map((id) => scope.collection('conversions').doc(id))) : [];
  return () => {
    for (const e of entries) tx.update(e.ref, { status: 'approved', payoutId: null, reason: 'transfer reversed by Stripe' });
    // Only a conversion still paid: one reversed meanwhile has had its clawback and stays reversed.
    for (const c of conversions) if (c.exists && c.get('status') === 'paid') tx.update(c.ref, { status: 'approved' });
  };
}

/**
 * Puts back, chunk by chunk, the entries a full reversal left on a payout marked `restoringEntries`, and clears the
 * mark with the last chunk. Each chunk moves only entries still paid under the payout, so a crash halfway, or two
 * callers at once (the webhook's redelivery and a payout run), move each entry once; the cursor ends the walk even
 * if an entry stays paid.
 */
export async function restoreReversedEntries(scope: OrgScope, payoutId: string): Promise<void> {
  const payoutRef = scope.collection('payouts').doc(payoutId);
  let after: string | undefined;
  for (;;) {
    let q = scope.collection('ledger').where('payoutId', '==', payoutId).where('status', '==', 'paid').orderBy(FieldPath.documentId()).select().limit(restoreChunk);
    if (after) q = q.startAfter(after);
    const refs = (await q.get()).docs.map((d) => d.ref);
    const last = refs.length < restoreChunk;
    const going = await firestore().runTransaction(async (tx) => {
      const payout = await tx.get(payoutRef);
      if (payout.get('restoringEntries') !== true) return false;
      (await readRestore(tx, scope, payoutId, refs))();
      if (last) tx.update(payoutRef, { restoringEntries: FieldValue.delete() });
      return true;
    });
    if (!going || last) return;
    after = refs[refs.length - 1]!.id;
  }
}

/**
 * Applies the reversals the webhook parked on payouts that were not settled when they arrived (stripe-events.ts),
 * now that their payouts are. A payout still unsettled keeps its reversal for a later run. Each is applied in one
 * transaction with clearing it, so a crash halfway leaves it parked, and applying it again adds nothing. Then
 * finishes putting back the entries of payouts reversed in full whose restoring stopped halfway.
 */
export async function applyPendingReversals(scope: OrgScope): Promise<void> {
  const parked = await scope.collection('payouts').where('reversalParked', '==', true).select().get();
  for (const d of parked.docs) await applyParkedReversal(scope, d.id);
  const restoring = await scope.collection('payouts').where('restoringEntries', '==', true).select().get();
  for (const d of restoring.docs) await restoreReversedEntries(scope, d.id);
}

async function applyParkedReversal(scope: OrgScope, payoutId: string): Promise<void> {
  const payoutRef = scope.collection('payouts').doc(payoutId);
  const entryRefs = await payoutEntryRefs(scope, payoutId);
  const more = await firestore().runTransaction(async (tx) => {
    const payout = await tx.get(payoutRef);
    const parked = payout.get('parkedReversal') as TransferReversal | undefined;
    if (payout.get('reversalParked') !== true || !parked || unsettledPayoutStatuses.includes(payout.get('status') as string)) return false;
    const clear = { reversalParked: false, parkedReversal: FieldValue.delete() };
    const settledBy = ['paid', 'reversed'].includes(payout.get('status') as string) ? (payout.get('transferId') as string | null) : null;
    if (settledBy !== parked.transferId) {
      // The payout ended failed or cancelled, or was paid by another transfer: the reversal cannot be booked against
      // it. The money Stripe took back is not the affiliate's loss in our ledger then; a person should look.
      console.error(JSON.stringify({
        severity: 'ERROR', message: 'stripe reversal parked on a payout that was not settled by that transfer; not booked',
        orgId: scope.orgId, payoutId, status: payout.get('status'), transferId: payout.get('transferId') ?? null, reversal: parked,
      }));
      tx.update(payoutRef, { ...clear, unmatchedReversal: parked });
      return false;
    }
    const write = await readTransferReversal(tx, scope, payout, parked, entryRefs);
    if (write) return write(new Date().toISOString(), clear);
    tx.update(payoutRef, clear);
    return false;
  });
  if (more) await restoreReversedEntries(scope, payoutId);
}
