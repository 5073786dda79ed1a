import { documentIdPattern } from '../../shared/domain/schemas';
import { deterministicId } from '../../shared/ids';
import { collections } from '../../shared/names';
import { stripeObjectSchemas, type StripeObject, type StripeObjectType, type StripeWebhookEvent } from '../adapters/payouts/stripe-webhook';
import { firestore } from '../adapters/firestore';
import { globalIndexDoc, OrgScope } from './tenancy';

/**
 * `ignored_malformed`: a handled event type whose object is not shaped as Stripe documents it. It is recorded
 * as seen and answered 2xx, since Stripe would redeliver the same bytes for days and a 5xx changes nothing.
 */
export type StripeEventOutcome = 'applied' | 'duplicate' | 'ignored' | 'ignored_malformed';

/**
 * Applies a verified Stripe event once: the event id is recorded in the same transaction as its effect,
 * so a replayed webhook changes nothing.
 */
export async function applyStripeEvent(event: StripeWebhookEvent): Promise<StripeEventOutcome> {
  const seenRef = globalIndexDoc(collections.stripeEvents, event.id);
  const db = firestore();

  if (event.type === 'account.updated') {
    const object = readObject(event, 'account.updated');
    if (!object) return markSeen(seenRef, event.type, 'ignored_malformed');
    const accountId = object.id;
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
      tx.update(affiliateRef, { payoutsEnabled: object.payouts_enabled, stripeAccountEventCreated: event.created, updatedAt: new Date().toISOString() });
      return 'applied';
    });
  }

  if (event.type === 'transfer.reversed') {
    const transfer = readObject(event, 'transfer.reversed');
    return transfer ? applyTransferReversal(event, transfer, seenRef) : markSeen(seenRef, event.type, 'ignored_malformed');
  }

  // Without an account it is the platform's own payout, which nothing here reads.
  if ((event.type === 'payout.paid' || event.type === 'payout.failed') && event.account) {
    const object = readObject(event, event.type);
    if (!object) return markSeen(seenRef, event.type, 'ignored_malformed');
    // The connected account's own payout to its bank: recorded on the affiliate for support; our transfer
    // already moved the money, so the ledger does not change.
    return db.runTransaction(async (tx) => {
      if ((await tx.get(seenRef)).exists) return 'duplicate';
      const index = await tx.get(globalIndexDoc(collections.stripeAccountIndex, event.account!));
      tx.create(seenRef, { type: event.type, at: new Date().toISOString() });
      if (!index.exists) return 'ignored';
      const scope = OrgScope.system(index.get('orgId') as string, 'stripe-webhook');
      tx.update(scope.collection('affiliates').doc(index.get('affiliateId') as string), {
        lastBankPayout: { id: object.id, status: event.type === 'payout.paid' ? 'paid' : 'failed', amount: object.amount, currency: object.currency, failureCode: object.failure_code ?? null, at: new Date(event.created * 1000).toISOString() },
      });
      return 'applied';
    });
  }
  return markSeen(seenRef, event.type, 'ignored');
}

/** The event's object checked against what its type reads; undefined (and a warning logged) when it does not match. */
function readObject<T extends StripeObjectType>(event: StripeWebhookEvent, type: T): StripeObject<T> | undefined {
  const parsed = stripeObjectSchemas[type].safeParse(event.data.object);
  if (parsed.success) return parsed.data as StripeObject<T>;
  console.error(JSON.stringify({
    severity: 'WARNING', message: 'stripe webhook: event object is not as Stripe documents it; recorded as seen and ignored',
    eventId: event.id, type: event.type, issues: parsed.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message })),
  }));
  return undefined;
}

async function markSeen<O extends 'ignored' | 'ignored_malformed'>(ref: FirebaseFirestore.DocumentReference, type: string, outcome: O): Promise<O | 'duplicate'> {
  try {
    await ref.create({ type, at: new Date().toISOString(), ...(outcome === 'ignored' ? {} : { outcome }) });
    return outcome;
  } catch (err) {
    // Only an existing record means a redelivery; any other failure answers 5xx so Stripe tries again.
    if ((err as { code?: number }).code === 6 /* ALREADY_EXISTS */) return 'duplicate';
    throw err;
  }
}

/**
 * The money came back from the connected account. Stripe sends transfer.reversed for partial reversals too,
 * with `amount_reversed` the running total, so each event books only what it adds to the total recorded on
 * the payout. A full reversal puts the payout's own entries back to approved; anything else books a credit
 * entry for the newly reversed money, keyed by the payout and the total, so no delivery books it twice.
 */
async function applyTransferReversal(
  event: StripeWebhookEvent, transfer: StripeObject<'transfer.reversed'>, seenRef: FirebaseFirestore.DocumentReference,
): Promise<'applied' | 'duplicate' | 'ignored'> {
  const metadata = transfer.metadata ?? {};
  const { amount, amount_reversed: reversed } = transfer;
  // A transfer we did not make carries none of our metadata (nor ids that could be ours: they become paths).
  if (!metadata.orgId || !metadata.payoutId || !documentIdPattern.test(metadata.orgId) || !documentIdPattern.test(metadata.payoutId)) return markSeen(seenRef, event.type, 'ignored');
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
    const added = reversed - before;
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
