import { documentIdPattern } from '../../shared/domain/schemas';
import { collections } from '../../shared/names';
import { stripeObjectSchemas, type StripeObject, type StripeObjectType, type StripeWebhookEvent } from '../adapters/payouts/stripe-webhook';
import type { DocumentReference } from '@google-cloud/firestore';
import { firestore } from '../adapters/firestore';
import { PayoutProviderError, payoutProvider } from '../adapters/payouts';
import { payoutEntryRefs, readTransferReversal, restoreReversedEntries, unsettledPayoutStatuses, type TransferReversal } from './ledger-reversals';
import { accountStamp, applyAccountState } from './stripe-accounts';
import { globalIndexDoc, OrgScope } from './tenancy';

/**
 * `parked`: a transfer.reversed for a payout of ours that has not recorded its transfer yet, kept on the payout
 * for the payout run to apply once it is settled (applyTransferReversal).
 * `ignored_malformed`: a handled event type whose object is not shaped as Stripe documents it. It is recorded
 * as seen and answered 2xx, since Stripe would redeliver the same bytes for days and a 5xx changes nothing.
 */
export type StripeEventOutcome = 'applied' | 'parked' | 'duplicate' | 'ignored' | 'ignored_malformed';

/**
 * Applies a verified Stripe event once: the event id is recorded in the same transaction as its effect,
 * so a replayed webhook changes nothing.
 */
export async function applyStripeEvent(event: StripeWebhookEvent): Promise<StripeEventOutcome> {
  const seenRef = globalIndexDoc(collections.stripeEvents, event.id);
  const db = firestore();

  if (event.type === 'account.updated') {
    const object = readObject(event, 'account.updated');
    return object ? applyAccountUpdated(event, object, seenRef) : markSeen(seenRef, event.type, 'ignored_malformed');
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
      const scope = index.exists ? OrgScope.system(index.get('orgId') as string, 'stripe-webhook') : undefined;
      const affiliateRef = scope?.collection('affiliates').doc(index.get('affiliateId') as string);
      const stored = affiliateRef && ((await tx.get(affiliateRef)).get('lastBankPayout') as { id: string; status: string; at: string } | undefined);
      tx.create(seenRef, { type: event.type, at: new Date().toISOString() });
      if (!affiliateRef) return 'ignored';
      const status = event.type === 'payout.paid' ? 'paid' : 'failed';
      const at = new Date(event.created * 1000).toISOString();
      // Stripe does not deliver in order: an older event must not replace a newer one. A payout can fail after it
      // was paid (the bank returns it), so within one second its failure stands over its success.
      if (stored && (stored.at > at || (stored.at === at && stored.id === object.id && stored.status === 'failed'))) return 'ignored';
      tx.update(affiliateRef, {
        lastBankPayout: { id: object.id, status, amount: object.amount, currency: object.currency, failureCode: object.failure_code ?? null, at },
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

/**
 * Stripe does not deliver in order, so an older snapshot of the account must not undo a newer one; events carry
 * whole seconds, so two of one second cannot be ordered by their stamp. On such a tie, when they disagree, the
 * account is read from Stripe (as onboarding does), and what it says now stands, stamped with the second of the
 * read. A failed read records nothing: the webhook answers 5xx and Stripe delivers the event again.
 */
async function applyAccountUpdated(event: StripeWebhookEvent, object: StripeObject<'account.updated'>, seenRef: DocumentReference): Promise<StripeEventOutcome> {
  const db = firestore();
  const decide = () =>
    db.runTransaction(async (tx) => {
      if ((await tx.get(seenRef)).exists) return 'duplicate' as const;
      const index = await tx.get(globalIndexDoc(collections.stripeAccountIndex, object.id));
      const scope = index.exists ? OrgScope.system(index.get('orgId') as string, 'stripe-webhook') : undefined;
      const affiliateRef = scope?.collection('affiliates').doc(index.get('affiliateId') as string);
      const affiliate = affiliateRef ? await tx.get(affiliateRef) : undefined;
      if (!affiliateRef || !affiliate?.exists) {
        tx.create(seenRef, { type: event.type, at: new Date().toISOString() });
        return 'ignored' as const;
      }
      if (accountStamp(affiliate) === event.created && affiliate.get('payoutsEnabled') !== object.payouts_enabled) return { tie: affiliateRef };
      tx.create(seenRef, { type: event.type, at: new Date().toISOString() });
      return applyAccountState(tx, affiliate, object.payouts_enabled, event.created) ? ('applied' as const) : ('ignored' as const);
    });
  const outcome = await decide();
  if (typeof outcome === 'string') return outcome;

  // The read comes after both events of the tie were created, whatever our clock says against Stripe's.
  const readAt = Math.max(Math.floor(Date.now() / 1000), event.created);
  let account;
  try {
    account = await payoutProvider().getAccount(object.id);
  } catch (err) {
    // Stripe refusing for good (an account no longer connected to the platform) would answer 500 for days of
    // redeliveries: recorded as seen instead, and the value already stored stands.
    if (err instanceof PayoutProviderError && !err.retryable) return markSeen(seenRef, event.type, 'ignored');
    throw err;
  }
  return db.runTransaction(async (tx) => {
    if ((await tx.get(seenRef)).exists) return 'duplicate';
    const affiliate = await tx.get(outcome.tie);
    tx.create(seenRef, { type: event.type, at: new Date().toISOString(), resolvedBy: 'account_read' });
    // A later event applied meanwhile says more than this read.
    return applyAccountState(tx, affiliate, account.payoutsEnabled, readAt) ? 'applied' : 'ignored';
  });
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
 * with `amount_reversed` the running total; ledger-reversals.ts books what each event adds to it.
 *
 * A reversal can arrive before the payout has recorded its transfer: the run that sent it died after Stripe
 * answered, or is between Stripe's answer and its last settle transaction (status claiming, claimed or releasing,
 * transferId null). It is ours all the same (the payout exists, and will be settled paid by this very transfer),
 * so it must not be marked seen and ignored: the run would then settle the payout paid and the money Stripe took
 * back would never reach the affiliate's balance again. It is parked on the payout, in the same transaction that
 * marks the event seen, and the next payout run applies it once the payout is settled (applyPendingReversals).
 * Answering 5xx for Stripe to redeliver would be shorter, but not correct: Stripe stops retrying after three days,
 * and a payout whose answer was lost or rate limited stays unsettled until the organisation's next run, which a
 * weekly or monthly schedule puts further away than that.
 */
async function applyTransferReversal(
  event: StripeWebhookEvent, transfer: StripeObject<'transfer.reversed'>, seenRef: FirebaseFirestore.DocumentReference,
): Promise<'applied' | 'parked' | 'duplicate' | 'ignored'> {
  const metadata = transfer.metadata ?? {};
  const reversal: TransferReversal = { transferId: transfer.id, amount: transfer.amount, amountReversed: transfer.amount_reversed };
  // A transfer we did not make carries none of our metadata (nor ids that could be ours: they become paths).
  if (!metadata.orgId || !metadata.payoutId || !documentIdPattern.test(metadata.orgId) || !documentIdPattern.test(metadata.payoutId)) return markSeen(seenRef, event.type, 'ignored');
  const scope = OrgScope.system(metadata.orgId, 'stripe-webhook');
  const payoutRef = scope.collection('payouts').doc(metadata.payoutId);
  const entryRefs = await payoutEntryRefs(scope, metadata.payoutId);
  let restoring = false;
  const outcome = await firestore().runTransaction(async (tx) => {
    restoring = false;
    if ((await tx.get(seenRef)).exists) {
      // A redelivery after restoring the entries failed halfway (answered 5xx) finishes it.
      restoring = (await tx.get(payoutRef)).get('restoringEntries') === true;
      return 'duplicate';
    }
    const payout = await tx.get(payoutRef);
    const at = new Date().toISOString();
    if (payout.exists && payout.get('transferId') == null && unsettledPayoutStatuses.includes(payout.get('status') as string)) {
      const parked = payout.get('parkedReversal') as TransferReversal | undefined;
      // One payout, one idempotency key, one transfer: two transfers naming it is for a person to look at, and
      // a 5xx keeps the event until then instead of dropping one of the two.
      if (parked && parked.transferId !== reversal.transferId) throw new Error(`transfer.reversed ${event.id}: payout ${payout.id} already has a reversal parked for transfer ${parked.transferId}, not ${reversal.transferId}`);
      // The running total: an older or repeated one adds nothing to what is parked.
      const adds = !parked || parked.amountReversed < reversal.amountReversed;
      tx.create(seenRef, { type: event.type, at, ...(adds ? { outcome: 'parked' } : {}) });
      if (!adds) return 'ignored';
      tx.update(payoutRef, { reversalParked: true, parkedReversal: { ...reversal, eventId: event.id, at } });
      return 'parked';
    }
    // Metadata is only what we sent; the transfer id says the event is about the transfer that paid this payout.
    const applies = payout.exists && payout.get('transferId') === transfer.id;
    const write = applies ? await readTransferReversal(tx, scope, payout, reversal, entryRefs) : undefined;
    tx.create(seenRef, { type: event.type, at });
    if (payout.exists && !applies && payout.get('transferId') == null) {
      // Ours, but decided without a transfer (failed, cancelled, blocked): nothing paid here to take back.
      console.error(JSON.stringify({ severity: 'ERROR', message: 'stripe transfer.reversed for a payout that recorded no transfer; ignored', eventId: event.id, orgId: scope.orgId, payoutId: payout.id, status: payout.get('status'), reversal }));
    }
    if (!write) return 'ignored';
    restoring = write(at);
    return 'applied';
  });
  // Its own transactions after the one that recorded the reversal; a failure answers 5xx, and the redelivery or
  // the organisation's next payout run finishes it.
  if (restoring) await restoreReversedEntries(scope, payoutRef.id);
  return outcome;
}
