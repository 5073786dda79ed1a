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
      tx.create(seenRef, { type: event.type, at: new Date().toISOString() });
      if (!index.exists) return 'ignored';
      const scope = OrgScope.system(index.get('orgId') as string, 'stripe-webhook');
      tx.update(scope.collection('affiliates').doc(index.get('affiliateId') as string), { payoutsEnabled: object.payouts_enabled === true, updatedAt: new Date().toISOString() });
      return 'applied';
    });
  }

  if (event.type === 'transfer.reversed') {
    // The money came back from the connected account: return it to the affiliate's balance.
    const metadata = (object.metadata ?? {}) as Record<string, string>;
    if (!metadata.orgId || !metadata.payoutId) return markSeen(seenRef, event.type, 'ignored');
    const scope = OrgScope.system(metadata.orgId, 'stripe-webhook');
    const payoutRef = scope.collection('payouts').doc(metadata.payoutId);
    const entries = await scope.collection('ledger').where('payoutId', '==', metadata.payoutId).get();
    return db.runTransaction(async (tx) => {
      if ((await tx.get(seenRef)).exists) return 'duplicate';
      const payout = await tx.get(payoutRef);
      tx.create(seenRef, { type: event.type, at: new Date().toISOString() });
      if (!payout.exists || payout.get('status') === 'reversed') return 'ignored';
      tx.update(payoutRef, { status: 'reversed', reason: 'transfer_reversed', reversedAt: new Date().toISOString() });
      for (const e of entries.docs) {
        tx.update(e.ref, { status: 'approved', payoutId: null, reason: 'transfer reversed by Stripe' });
        if (e.get('type') === 'commission') tx.update(scope.collection('conversions').doc(e.get('conversionId') as string), { status: 'approved' });
      }
      return 'applied';
    });
  }

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
