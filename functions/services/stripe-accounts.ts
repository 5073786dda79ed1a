import type { DocumentSnapshot, Transaction } from '@google-cloud/firestore';

/** The second (Stripe's event time, or our read's) of the account state an affiliate holds; 0 before any. */
export const accountStamp = (affiliate: DocumentSnapshot) => (affiliate.get('stripeAccountEventCreated') as number | undefined) ?? 0;

/**
 * Stores what Stripe says of an affiliate's account as of `at` (whole seconds: an event's `created`, or the second
 * of our own read of the account, as onboarding does), unless the affiliate holds a later state already: Stripe
 * does not deliver in order. Answers whether it did. Inside the caller's transaction, which read `affiliate`.
 */
export function applyAccountState(tx: Transaction, affiliate: DocumentSnapshot, payoutsEnabled: boolean, at: number): boolean {
  if (accountStamp(affiliate) > at) return false;
  tx.update(affiliate.ref, { payoutsEnabled, stripeAccountEventCreated: at, updatedAt: new Date().toISOString() });
  return true;
}
