import { deterministicId } from '../../shared/ids';
import { collections } from '../../shared/names';
import type { StripeWebhookEvent } from '../adapters/payouts/stripe-webhook';
import { firestore } from '../adapters/firestore';
import { globalIndexDoc, OrgScope } from './tenancy';

/**
 * Applies a verified Stripe event once: the event id is recorded in the same transaction as its effect,
 * so a replayed webhook changes nothing.
 */
export async function applyStripeEvent(event: StripeWebhookEvent): Promise<'applied' | 'duplicate' | 'ignored'> {
  const seenRef = globalIndexDoc(collections.stripeEvents, event.id);
  const object = event.data.object;
  const db = firestore();

  if (event.type === 'account.updated') {
    const accountId = object.id as string;
    return db.runTransaction(async (tx) => {
      if ((await tx.get(seenRef)).exists) return 'duplicate';
      const index = await tx.get(globalIndexDoc(collections.stripeAccountIndex, accountId));
      const scope = index.exists ? OrgScope.system(index.get('orgId') as string, 'stripe-webhook') : undefined;
      const affiliateRef = scope?.collection('affiliates').doc(index.get('affiliateId') as string);
      const affiliate = affiliateRef ? await tx.get(affiliateRef) : undefined;
      tx.create(seenRef, { type: event.type, at: new Date().toISOString() });
      if (!affiliateRef || !affiliate?.exists) return 'ignored';
      // Stripe does not deliver in order: an older snapshot of the account must not undo a newer one.
      if (((affiliate.get('stripeAccountEventCreated') as number | undefined) ?? 0) > event.created) return 'ignored';
      tx.update(affiliateRef, { payoutsEnabled: object.payouts_enabled === true, stripeAccountEventCreated: event.created, updatedAt: new Date().toISOString() });
      return 'applied';
    });
  }

  if (event.type === 'transfer.reversed') return applyTransferReversal(event, seenRef);

  if ((event.type === 'payout.paid' || event.type === 'payout.failed') && event.account) {
    // The connected account's own payout to its bank: recorded on the affiliate for support; our transfer
    // already moved the money, so the ledger does not change.
    return db.runTransaction(async (tx) => {
      if ((await tx.get(seenRef)).exists) return 'duplicate';
      const index = await tx.get(globalIndexDoc(collections.stripeAccountIndex, event.account!));
      tx.create(seenRef, { type: event.type, at: new Date().toISOString() });
      if (!index.exists) return 'ignored';
      const scope = OrgScope.system(index.get('orgId') as string, 'stripe-webhook');
      tx.update(scope.collection('affiliates').doc(index.get('affiliateId') as string), {
        lastBankPayout: { status: event.type === 'payout.paid' ? 'paid' : 'failed', amount: object.amount ?? null, currency: object.currency ?? null, failureCode: object.failure_code ?? null, at: new Date(event.created * 1000).toISOString() },
      });
      return 'applied';
    });
  }
  return markSeen(seenRef, event.type, 'ignored');
}

async function markSeen(ref: FirebaseFirestore.DocumentReference, type: string, outcome: 'ignored'): Promise<'ignored' | 'duplicate'> {
  try {
    await ref.create({ type, at: new Date().toISOString() });
    return outcome;
  } catch {
    return 'duplicate';
  }
}

/**
 * The money came back from the connected account. Stripe sends transfer.reversed for partial reversals too,
 * with `amount_reversed` the running total, so each event books only what it adds to the total recorded on
 * the payout. A full reversal puts the payout's own entries back to approved; anything else books a credit
 * entry for the newly reversed money, keyed by the payout and the total, so no delivery books it twice.
 */
async function applyTransferReversal(event: StripeWebhookEvent, seenRef: FirebaseFirestore.DocumentReference): Promise<'applied' | 'duplicate' | 'ignored'> {
  const transfer = event.data.object;
  const metadata = (transfer.metadata ?? {}) as Record<string, string>;
  const { amount, amount_reversed: reversed } = transfer;
  if (!metadata.orgId || !metadata.payoutId || !Number.isSafeInteger(amount) || !Number.isSafeInteger(reversed)) return markSeen(seenRef, event.type, 'ignored');
  const scope = OrgScope.system(metadata.orgId, 'stripe-webhook');
  const payoutRef = scope.collection('payouts').doc(metadata.payoutId);
  // Found outside the transaction (a query inside one locks far more); each is read again inside it.
  const entryRefs = (await scope.collection('ledger').where('payoutId', '==', metadata.payoutId).select().get()).docs.map((d) => d.ref);
  return firestore().runTransaction(async (tx) => {
    if ((await tx.get(seenRef)).exists) return 'duplicate';
    const payout = await tx.get(payoutRef);
    // Metadata is only what we sent; the transfer id says the event is about the transfer that paid this payout.
    const applies = payout.exists && payout.get('transferId') === transfer.id;
    const before = !applies ? 0 : ((payout.get('amountReversed') as number | undefined) ?? (payout.get('status') === 'reversed' ? (payout.get('amount') as number) : 0));
    const added = (reversed as number) - before;
    const full = reversed === amount;
    // A full reversal after partial ones would return the credits already booked a second time as entries.
    const restoreEntries = applies && added > 0 && full && before === 0;
    const entries = restoreEntries && entryRefs.length ? (await tx.getAll(...entryRefs)).filter((e) => e.get('status') === 'paid' && e.get('payoutId') === payout.id) : [];
    const conversionIds = [...new Set(entries.filter((e) => e.get('type') === 'commission').map((e) => e.get('conversionId') as string))];
    const conversions = conversionIds.length ? await tx.getAll(...conversionIds.map((id) => scope.collection('conversions').doc(id))) : [];
    tx.create(seenRef, { type: event.type, at: new Date().toISOString() });
    if (!applies || added <= 0) return 'ignored';
    const at = new Date().toISOString();
    if (restoreEntries) {
      for (const e of entries) tx.update(e.ref, { status: 'approved', payoutId: null, reason: 'transfer reversed by Stripe' });
      // Only a conversion still paid: one reversed meanwhile has had its clawback and stays reversed.
      for (const c of conversions) if (c.exists && c.get('status') === 'paid') tx.update(c.ref, { status: 'approved' });
    } else {
      const id = deterministicId('led', payout.id, 'transfer_reversal', String(reversed));
      tx.set(scope.collection('ledger').doc(id), {
        id, affiliateId: payout.get('affiliateId'), conversionId: null, campaignId: null, type: 'transfer_reversal', amount: added,
        currency: payout.get('currency'), status: 'approved', payoutId: null, reversedPayoutId: payout.id, createdAt: at, reason: 'transfer reversed by Stripe',
      });
    }
    tx.update(payoutRef, { amountReversed: reversed, ...(full ? { status: 'reversed', reason: 'transfer_reversed', reversedAt: at } : { reason: 'transfer_partially_reversed' }) });
    return 'applied';
  });
}
