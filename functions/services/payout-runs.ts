import { randomBytes } from 'node:crypto';
import { FieldPath, FieldValue, type DocumentData, type DocumentReference, type DocumentSnapshot, type Transaction } from '@google-cloud/firestore';
import { conversionsEarnedBy, minimumIn, planPayouts, type BelowMinimum, type LedgerEntry, type PayoutMinimum } from '../../shared/domain/ledger';
import { ApiError, conflict } from '../../shared/errors';
import { deterministicId, newId } from '../../shared/ids';
import { firestore } from '../adapters/firestore';
import { PayoutProviderError, payoutProvider, type TransferOutcome } from '../adapters/payouts';
import { applyPendingReversals, unsettledPayoutStatuses } from './ledger-reversals';
import type { OrgScope } from './tenancy';

/**
 * A payout run, exactly once in money:
 *  1. A lease per organisation keeps two runs from overlapping, two attempts of the same run included; a run that
 *     outlives its lease stops before it claims, sends or gives back anything (see Lease).
 *  2. Payouts an earlier run left `claiming`, `claimed` or `releasing` are finished first, with their own ids. The
 *     hourly job also runs this step alone (finishUnsettledPayouts), so a kept payout does not wait for the
 *     organisation's next scheduled run.
 *  3. Approved, unclaimed entries are grouped per affiliate and currency; each group that reaches the
 *     affiliate's minimum becomes a payout whose deterministic id is the Stripe idempotency key, and its
 *     entries are claimed in transactions that only move entries still `approved` and unclaimed.
 *  4. Each claimed payout is transferred; a crash after Stripe accepted it and before we recorded it is
 *     harmless, because the retry sends the same idempotency key and Stripe answers with the same transfer.
 *     A failure that may be retried (an answer lost, a 429, a 409) keeps the claim for step 2 of a later run or pass;
 *     a refused payout is looked up at Stripe before its money goes back (an earlier attempt may have been made).
 *  5. Reversals Stripe reported before their payouts were settled are applied once they are (ledger-reversals.ts).
 *  6. A claim that ends below the affiliate's minimum (entries reversed since planning) is cancelled, not sent.
 */
const leaseMs = 15 * 60_000;
const claimChunk = 400; // entries per claim transaction: small enough to retry cheaply when one meets another
const payoutConcurrency = 8;

export interface PayoutSummary {
  id: string;
  affiliateId: string;
  amount: number;
  currency: string;
  status: string;
  reason: string | null;
  transferId: string | null;
  simulated: boolean;
}

export interface PayoutRunResult {
  id: string;
  status: 'completed' | 'dry_run';
  trigger: string;
  createdAt: string;
  completedAt: string | null;
  /** The first `payoutsListed` of the run's payouts (GET …/payouts?runId= pages through all of them). */
  payouts: PayoutSummary[];
  /** How many payouts the run made in all (blocked ones included). */
  payoutCount: number;
  /** Balances the run left for a later one, under their affiliate's minimum payout: the first `belowMinimumListed`. */
  belowMinimum: BelowMinimum[];
  /** How many there were in all (runs completed before 2026-11-24 recorded none). */
  belowMinimumCount: number;
}

/**
 * The held-back balances a run lists. A programme's long tail of small earners would otherwise grow the run's
 * document past Firestore's 1 MiB (about 10,000 of them) and the run could never be marked completed.
 */
export const belowMinimumListed = 100;

export const toPayout = (d: DocumentData): PayoutSummary => ({
  id: d.id, affiliateId: d.affiliateId, amount: d.amount, currency: d.currency, status: d.status, reason: d.reason ?? null,
  transferId: d.transferId ?? null, simulated: d.simulated ?? false,
});

const lockRef = (scope: OrgScope) => scope.collection('locks').doc('payout-run');

/**
 * The lease is held by one call, not by a run id: two attempts of the same run (a retried request, the scheduler
 * firing twice) would otherwise both pass it and claim and transfer side by side.
 */
async function acquireLease(scope: OrgScope, runId: string): Promise<string> {
  const ref = lockRef(scope);
  const token = randomBytes(16).toString('hex');
  await firestore().runTransaction(async (tx) => {
    const lock = await tx.get(ref);
    if (lock.exists && (lock.get('expiresAt') as number) > Date.now()) {
      throw conflict(`Payout run ${lock.get('runId') as string} is in progress; try again when it has finished`);
    }
    tx.set(ref, { runId, token, expiresAt: Date.now() + leaseMs });
  });
  return token;
}

async function renewLease(scope: OrgScope, token: string): Promise<void> {
  await firestore().runTransaction(async (tx) => {
    if ((await tx.get(lockRef(scope))).get('token') === token) tx.update(lockRef(scope), { expiresAt: Date.now() + leaseMs });
  });
}

async function releaseLease(scope: OrgScope, token: string): Promise<void> {
  await firestore().runTransaction(async (tx) => {
    if ((await tx.get(lockRef(scope))).get('token') === token) tx.delete(lockRef(scope));
  });
}

/**
 * How long before its lease ends a holder stops calling Stripe: the longest a transfer call can take (stripe-node's
 * 80 s timeout, its retries and their back-off), so that no send is still under way when another run may take over.
 */
const sendMarginMs = 5 * 60_000;

/**
 * A run's lease as it works under it. A holder can outlive its lease: its renewals fail for 15 minutes, or its
 * instance's CPU is throttled once the request that started it has ended and it resumes much later. Another run
 * or pass may then hold the lease and be finishing the same payouts. So the steps a stale holder would get wrong
 * check the lease first: claiming (it would grow a payout another holder has already sent), giving entries back
 * (another holder may be sending the same payout), and sending (another holder may have given its entries back).
 * Recording a transfer Stripe accepted is never refused: that money has moved.
 */
interface Lease {
  /**
   * In a transaction, before its writes: reads the lock with `others` in one round trip, throws LeaseLost unless it
   * is still this holder's and unexpired, and answers the others' snapshots (each checked transaction would
   * otherwise pay a round trip of its own for the lock: at 10,000 payouts, minutes of a run).
   */
  fence(tx: Transaction, ...others: DocumentReference[]): Promise<DocumentSnapshot[]>;
  /** Before a call to Stripe: the same, with sendMarginMs of the lease left. */
  check(): Promise<void>;
  release(): Promise<void>;
}

/** A 409: the run stopped where it was, and whoever holds the lease now (or the next run) finishes what it left. */
class LeaseLost extends ApiError {
  constructor(runId: string) {
    super('conflict', `Payout run ${runId} lost its lease (it ran out, or another run has taken it); it stopped, and the payouts it left are finished by the holder or the next run`);
  }
}

function heldBy(lock: DocumentSnapshot, token: string, marginMs: number): boolean {
  return lock.exists && lock.get('token') === token && (lock.get('expiresAt') as number) > Date.now() + marginMs;
}

/** The lease, renewed while its holder works however long that takes; `release` gives it up. */
async function holdLease(scope: OrgScope, runId: string): Promise<Lease> {
  const token = await acquireLease(scope, runId);
  // Renewed well within sendMarginMs, so one failed renewal does not stop a run.
  const renewal = setInterval(
    () =>
      void renewLease(scope, token).catch((err: unknown) =>
        console.warn(JSON.stringify({ severity: 'WARNING', message: 'payout run: lease renewal failed; the run stops sending with 5 minutes of lease left', orgId: scope.orgId, runId, error: String(err) })),
      ),
    leaseMs / 5,
  );
  renewal.unref();
  return {
    fence: async (tx, ...others) => {
      const [lock, ...snaps] = await tx.getAll(lockRef(scope), ...others);
      if (!heldBy(lock!, token, 0)) throw new LeaseLost(runId);
      return snaps;
    },
    check: async () => {
      if (!heldBy(await lockRef(scope).get(), token, sendMarginMs)) throw new LeaseLost(runId);
    },
    release: async () => {
      clearInterval(renewal);
      await releaseLease(scope, token);
    },
  };
}

/** Claims entries into the payout, chunk by chunk; returns what was actually claimed. */
type ClaimedEntry = { id: string; type: string; conversionId: string };

async function claim(scope: OrgScope, lease: Lease, payoutRef: FirebaseFirestore.DocumentReference, entryIds: string[]): Promise<{ amount: number; entries: ClaimedEntry[] }> {
  const ledger = scope.collection('ledger');
  const claimed: ClaimedEntry[] = [];
  let total = 0;
  for (let i = 0; i < entryIds.length; i += claimChunk) {
    const chunk = entryIds.slice(i, i + claimChunk);
    await firestore().runTransaction(async (tx) => {
      const [payout, ...snaps] = await lease.fence(tx, payoutRef, ...chunk.map((id) => ledger.doc(id)));
      let add = 0;
      const ids: ClaimedEntry[] = [];
      for (const s of snaps) {
        // Only entries still approved and unclaimed move: another run, a reversal or a retry may have got there first.
        if (!s.exists || s.get('status') !== 'approved' || s.get('payoutId')) continue;
        tx.update(s.ref, { status: 'claimed', payoutId: payoutRef.id });
        add += s.get('amount') as number;
        ids.push({ id: s.id, type: s.get('type') as string, conversionId: s.get('conversionId') as string });
      }
      const amount = (payout!.get('amount') as number) + add;
      tx.update(payoutRef, { amount, entryCount: (payout!.get('entryCount') as number) + ids.length });
      return { amount, ids };
    }).then(({ amount, ids }) => {
      // Assigned after the commit: a retried transaction must not count its entries twice.
      total = amount;
      claimed.push(...ids);
    });
  }
  return { amount: total, entries: claimed };
}

/** What settling a payout does to its entries, their conversions and the payout itself. */
interface Outcome {
  entries: Record<string, unknown>;
  /** Commissions move their conversion only from this status, so a conversion reversed meanwhile stays reversed. */
  conversions?: { from: string; to: string };
  payout: Record<string, unknown>;
  /** Written first when the outcome needs more than one transaction and a crash halfway must be found again. */
  interim?: Record<string, unknown>;
  /**
   * Set when the outcome records a transfer Stripe made: that money has moved, so it is recorded even by a holder
   * that lost its lease, and never over what another holder settled since (see applyOutcome).
   */
  transferId?: string;
}

const settleChunk = 200; // an entry and its conversion each: ~400 writes per transaction

/**
 * Applies an outcome to the entries still claimed by the payout, chunk by chunk, and to the payout in the last
 * chunk's transaction: a payout of one chunk moves at once, and a crash between chunks leaves the payout in a
 * status the next run's recovery finishes. The entries come from the claim when this run made it; a payout
 * recovered from an earlier run finds them by query.
 *
 * A transfer is recorded without the lease (the money moved), so two holders can meet here: a stale run whose send
 * went through after its last check, and the holder giving the same payout's entries back after its own send was
 * refused before Stripe stored anything. Every transaction reads the payout first. A give-back stops as soon as the
 * payout is no longer unsettled (a transfer was recorded: its entries stay paid). A transfer moves the payout to
 * `paid` only from `claiming` or `claimed`: one being given back, or settled otherwise since, is not overwritten; it
 * gets `strayTransferId`, and an ERROR says its entries may be paid twice, for someone to reconcile. (Met halfway
 * through a give-back, the transfer still marks the entries it finds claimed as paid, since that money moved: the
 * payout then ends `failed` with some entries paid, which the ERROR covers.)
 */
async function applyOutcome(scope: OrgScope, lease: Lease, payoutId: string, outcome: Outcome, known?: ClaimedEntry[]): Promise<void> {
  const ledger = scope.collection('ledger');
  const payoutRef = scope.collection('payouts').doc(payoutId);
  const ids = known?.map((e) => e.id) ?? (await ledger.where('payoutId', '==', payoutId).where('status', '==', 'claimed').select().get()).docs.map((d) => d.id);
  const recordsTransfer = outcome.transferId !== undefined;
  /**
   * The payout and `entries` as this transaction finds them, in one round trip with the lease check of a give-back;
   * no payout when a give-back must stop.
   */
  const readPayout = async (tx: Transaction, entries: DocumentReference[] = []) => {
    const [payout, ...snaps] = recordsTransfer ? await tx.getAll(payoutRef, ...entries) : await lease.fence(tx, payoutRef, ...entries);
    const open = recordsTransfer || unsettledPayoutStatuses.includes(payout!.get('status') as string);
    return { payout: open ? payout : undefined, snaps };
  };
  const chunks: string[][] = [];
  for (let i = 0; i < ids.length; i += settleChunk) chunks.push(ids.slice(i, i + settleChunk));
  if (!chunks.length) chunks.push([]);
  let stopped: string | undefined;
  if (chunks.length > 1 && outcome.interim) {
    stopped = await firestore().runTransaction(async (tx) => {
      if (!(await readPayout(tx)).payout) return 'settled meanwhile';
      tx.update(payoutRef, outcome.interim!);
      return undefined;
    });
  }
  let stray: { status: string; transferId: unknown } | undefined;
  for (const [i, chunk] of chunks.entries()) {
    if (stopped) break;
    const last = i === chunks.length - 1;
    [stopped, stray] = await firestore().runTransaction(async (tx) => {
      const { payout, snaps } = await readPayout(tx, chunk.map((id) => ledger.doc(id)));
      if (!payout) return ['settled meanwhile', undefined] as const;
      const status = payout.get('status') as string;
      // Only entries this payout still holds: a retried transaction or an earlier attempt may have moved some.
      const held = snaps.filter((e) => e.exists && e.get('status') === 'claimed' && e.get('payoutId') === payoutId);
      const conversionIds = conversionsEarnedBy(held);
      const conversions = outcome.conversions && conversionIds.length ? await tx.getAll(...conversionIds.map((id) => scope.collection('conversions').doc(id))) : [];
      for (const e of held) tx.update(e.ref, outcome.entries);
      for (const c of conversions) if (c.exists && c.get('status') === outcome.conversions!.from) tx.update(c.ref, { status: outcome.conversions!.to });
      if (!last) return [undefined, undefined] as const;
      if (!recordsTransfer || status === 'claiming' || status === 'claimed') {
        tx.update(payoutRef, outcome.payout);
        return [undefined, undefined] as const;
      }
      // Recorded already (a retry of this step, or the holder found the same transfer): nothing new.
      if (payout.get('transferId') === outcome.transferId) return [undefined, undefined] as const;
      tx.update(payoutRef, { strayTransferId: outcome.transferId });
      return [undefined, { status, transferId: payout.get('transferId') as unknown }] as const;
    });
  }
  if (stopped) {
    console.warn(JSON.stringify({ severity: 'WARNING', message: 'payout run: not given back, the payout was settled meanwhile (a transfer recorded, or given back elsewhere)', orgId: scope.orgId, payoutId }));
  }
  if (stray) {
    console.error(JSON.stringify({
      severity: 'ERROR', message: 'payout run: a transfer was made for a payout that was being given back or settled otherwise; its entries may be paid twice, reconcile it',
      orgId: scope.orgId, payoutId, transferId: outcome.transferId, payoutNow: stray,
    }));
  }
}

/** Stripe keeps idempotency keys for at least 24 hours; an hour's margin covers clocks and a long run. */
const keyTrustedMs = 23 * 3_600_000;

/**
 * A payout claimed long ago may have been sent already under a key Stripe has since forgotten: sending it again
 * would pay it twice, so the transfer is looked for first. Payouts claimed before claimedAt was recorded count
 * from the run's start, which is earlier, so they are looked up sooner rather than later.
 */
function keyMayBeForgotten(payout: DocumentData): boolean {
  const since = Date.parse((payout.claimedAt ?? payout.createdAt) as string);
  return Date.now() - since > keyTrustedMs;
}

/**
 * Why a claimed payout stays claimed, written only while it still is: a run that lost its lease while it waited on
 * Stripe must not write its reason over the outcome the run that took over has recorded.
 */
async function noteOnClaim(ref: DocumentReference, note: { reason: string; lastError?: string }): Promise<void> {
  await firestore().runTransaction(async (tx) => {
    const payout = await tx.get(ref);
    if (payout.get('status') === 'claimed') tx.update(ref, note);
  });
}

/**
 * The transfer of a payout that may have been sent before, looked up after Stripe refused its resend. A refusal
 * says nothing about an earlier attempt when it comes from in front of Stripe's idempotency layer (429, 401 after
 * a key rotation) or before the endpoint executed (validation, a request conflicting with another): Stripe
 * stores a result under the key only once the endpoint began executing, so such an answer is never the replay
 * of the earlier success. undefined: not found; 'unknown': the lookup failed too.
 */
async function transferSentEarlier(payout: DocumentData): Promise<{ transferId: string } | undefined | 'unknown'> {
  try {
    const sentTo = Array.isArray(payout.sentTo) && payout.sentTo.length ? { destinations: payout.sentTo as string[] } : {};
    return await payoutProvider().findTransfer({ payoutId: payout.id as string, transferGroup: payout.runId as string, ...sentTo });
  } catch (err) {
    if (err instanceof PayoutProviderError) return 'unknown';
    throw err;
  }
}

/**
 * Sends a claimed payout to the provider and records the outcome. The payout may have been sent already, by an
 * earlier run (it was left `claimed`: the run died after sending, or Stripe's answer was lost or rate limited) or
 * by this very call: stripe-node sends a request again after a dropped connection, even with retries off, and the
 * first attempt may have gone through while the second is refused (a 401 after a key rotation in between).
 */
async function settle(scope: OrgScope, lease: Lease, payout: DocumentData, opts: { affiliate?: DocumentData | undefined; claimed?: ClaimedEntry[] }): Promise<void> {
  const ref = scope.collection('payouts').doc(payout.id as string);
  const affiliate = opts.affiliate ?? (await scope.collection('affiliates').doc(payout.affiliateId as string).get()).data();
  // The transfer may exist, or the same key may simply be sent again (rate_limited: shed before executing): keep
  // the claim, and let the next run send the same idempotency key. Releasing here would pay the money twice.
  const keep = (reason: string, message: string) => noteOnClaim(ref, { reason, lastError: message });
  const earlier = keyMayBeForgotten(payout) ? await transferSentEarlier(payout) : undefined;
  // Neither sent again nor released while nobody can tell whether it was sent: the next run looks again.
  if (earlier === 'unknown') return keep('lookup_failed', 'claimed over 23 h ago, and the earlier transfer could not be looked up');
  const simulated = payoutProvider().kind === 'dry-run';
  if (!earlier) await lease.check();
  const destination = affiliate?.stripeAccountId as string | undefined;
  // Every account an attempt goes to, before it goes: a later search for the transfer reads only theirs (an
  // affiliate who connected another account since is still searched at the first).
  const sentTo = (payout.sentTo as string[] | undefined) ?? [];
  if (!earlier && destination && !sentTo.includes(destination)) {
    await ref.update({ sentTo: FieldValue.arrayUnion(destination) });
  }
  // What this call is about to send counts too: a send refused after it went through (a dropped connection, then a
  // resend refused) is looked up below, at the account it just went to.
  const sent = { ...payout, sentTo: destination && !sentTo.includes(destination) ? [...sentTo, destination] : sentTo };
  const outcome: TransferOutcome = earlier ? { ok: true, transferId: earlier.transferId, simulated } : await payoutProvider().transfer({
    payoutId: payout.id, amount: payout.amount, currency: payout.currency, destinationAccountId: affiliate?.stripeAccountId,
    transferGroup: payout.runId, metadata: { orgId: scope.orgId, affiliateId: payout.affiliateId, payoutId: payout.id, runId: payout.runId },
    description: `ABP payout ${payout.id}`,
  });
  const at = new Date().toISOString();
  const paid = (transferId: string, simulated: boolean) =>
    // Entries first (or with the payout): a crash leaves the payout `claimed`, and recovery replays the same key.
    applyOutcome(scope, lease, payout.id, {
      entries: { status: 'paid', paidAt: at }, conversions: { from: 'approved', to: 'paid' },
      payout: { status: 'paid', transferId, simulated, paidAt: at, reason: null }, transferId,
    }, opts.claimed);
  if (outcome.ok) return paid(outcome.transferId, outcome.simulated);
  if (outcome.retryable) return keep(outcome.reason, outcome.message);
  // So no money goes back before Stripe has been asked whether the transfer exists, unless the refusal is one Stripe
  // decides while executing and stores under the key (balance_insufficient): had any attempt gone through, that
  // would have been the replayed success. Skipping the lookup there keeps a run whose platform balance ran out from
  // listing its whole transfer group once per remaining payout.
  if (outcome.reason !== 'balance_insufficient') {
    const found = await transferSentEarlier(sent);
    if (found === 'unknown') return keep(outcome.reason, `${outcome.message} (and the transfer could not be looked up)`);
    if (found) return paid(found.transferId, simulated);
  }
  // A definite failure: the money goes back to the affiliate's balance, with the reason on the payout. Never
  // `claimed` with entries already released: a retry could then succeed and pay money the next run pays again.
  await applyOutcome(scope, lease, payout.id, {
    entries: { status: 'approved', payoutId: null },
    payout: { status: 'failed', reason: outcome.reason, lastError: outcome.message, failedAt: at },
    interim: { status: 'releasing', releaseTo: 'failed', reason: outcome.reason, lastError: outcome.message },
  }, opts.claimed);
}

/** An affiliate's minimum payout counts in its payout currency only (see planPayouts). */
function payoutMinimumOf(affiliate: DocumentData | undefined): PayoutMinimum | undefined {
  return affiliate?.payoutCurrency && typeof affiliate.minimumPayout === 'number' ? { currency: affiliate.payoutCurrency as string, amount: affiliate.minimumPayout } : undefined;
}

const inactiveReason = (affiliate: DocumentData | undefined): string | undefined =>
  affiliate && affiliate.status !== 'active' ? `affiliate_${String(affiliate.status)}` : undefined;

/**
 * Why an affiliate's balance is not paid at all, if it is not: an affiliate that is not `active` (paused, blocked)
 * or has no payout account. Its money waits in its balance for a run after that changes.
 */
function whyNotPaid(affiliate: DocumentData | undefined): string | undefined {
  const inactive = inactiveReason(affiliate);
  if (inactive) return inactive;
  if (!affiliate?.stripeAccountId || !affiliate.payoutsEnabled) return 'no_payout_account';
  return undefined;
}

/**
 * Why a claimed amount is not sent, if it is not: planning checked the net against the minimum, but entries
 * reversed (or claimed elsewhere) before the claim reached them leave the payout smaller than planned.
 */
function notPayable(amount: number, affiliate: DocumentData | undefined, currency: string): string | undefined {
  if (amount <= 0) return 'nothing_left_to_claim';
  if (amount < minimumIn(currency, payoutMinimumOf(affiliate))) return 'below_minimum';
  return undefined;
}

/** Puts back what a payout that is not to be sent holds; the entries wait in the balance for a later run. */
function cancel(scope: OrgScope, lease: Lease, payoutId: string, reason: string, claimed?: ClaimedEntry[]): Promise<void> {
  return applyOutcome(scope, lease, payoutId, {
    entries: { status: 'approved', payoutId: null }, payout: { status: 'cancelled', reason },
    interim: { status: 'releasing', releaseTo: 'cancelled', reason },
  }, claimed);
}

/** `claimed` from here on: the amount is final, and its age says when Stripe may have forgotten the key. */
function markClaimed(scope: OrgScope, lease: Lease, payoutId: string): Promise<unknown> {
  return firestore().runTransaction(async (tx) => {
    await lease.fence(tx);
    tx.update(scope.collection('payouts').doc(payoutId), { status: 'claimed', claimedAt: new Date().toISOString() });
  });
}

/**
 * Finishes a payout an earlier run left in the middle. `claiming` means it died between claim transactions:
 * the stored amount is exactly what its claimed entries add up to (each claim transaction moves both), so it
 * is paid as claimed under its own id; a payout that netted to nothing gives its entries back.
 */
async function recover(scope: OrgScope, lease: Lease, payout: DocumentData): Promise<void> {
  if (payout.status === 'releasing') {
    const status = (payout.releaseTo as string | undefined) ?? 'failed';
    await applyOutcome(scope, lease, payout.id, { entries: { status: 'approved', payoutId: null }, payout: { status, ...(status === 'failed' ? { failedAt: new Date().toISOString() } : {}) } });
    return;
  }
  const affiliate = (await scope.collection('affiliates').doc(payout.affiliateId as string).get()).data();
  if (payout.status === 'claiming') {
    // Never sent: an affiliate paused or blocked since gets its money back in its balance.
    const unpayable = inactiveReason(affiliate) ?? notPayable(payout.amount as number, affiliate, payout.currency as string);
    if (unpayable) return cancel(scope, lease, payout.id, unpayable);
    await markClaimed(scope, lease, payout.id);
  } else {
    // Left `claimed`, it may have been sent, so its money is not given back; but an affiliate paused or blocked
    // since is not sent it either. The claim stays, saying why, and a pass after the affiliate is active again
    // sends it under the same key (looking it up first once the key may be forgotten).
    const inactive = inactiveReason(affiliate);
    if (inactive) return noteOnClaim(scope.collection('payouts').doc(payout.id as string), { reason: inactive });
  }
  await settle(scope, lease, { ...payout, status: 'claimed' }, { affiliate });
}

/**
 * Step 2, under the lease: finishes every payout earlier runs left unsettled (they crashed, or Stripe's answer
 * was lost or rate limited), then applies reversals parked on payouts settled now or earlier. Answers the ids of
 * the payouts it found.
 */
async function finishEarlierPayouts(scope: OrgScope, lease: Lease): Promise<string[]> {
  const unfinished = await scope.collection('payouts').where('status', 'in', [...unsettledPayoutStatuses]).get();
  for (const d of unfinished.docs) {
    // One payout that cannot be finished now (its lookup or transfer fails) stays as it is for the next run;
    // everyone else is still paid. A lease lost stops the pass: every payout after it would meet the same.
    await recover(scope, lease, d.data()).catch((err: unknown) => {
      if (err instanceof LeaseLost) throw err;
      console.error(JSON.stringify({ severity: 'ERROR', message: 'payout run: an unfinished payout could not be recovered; left for the next run', orgId: scope.orgId, payoutId: d.id, error: String((err as Error)?.stack ?? err) }));
    });
  }
  await applyPendingReversals(scope);
  return unfinished.docs.map((d) => d.id);
}

export interface FinishResult {
  /** `busy`: another run or pass holds the organisation's lease; it, or the next pass, finishes what is left. */
  status: 'finished' | 'busy';
  payouts: PayoutSummary[];
}

/**
 * Step 2 alone, for the hourly job: a payout kept for a retryable failure is sent again under its own id (the
 * same Stripe idempotency key, its run's transfer_group) within the hour, not at the organisation's next
 * scheduled run. Nothing is planned or claimed: approved entries wait for a run. `attemptId` names the pass in
 * the lease only; it makes no payout and no run record.
 */
export async function finishUnsettledPayouts(scope: OrgScope, attemptId: string): Promise<FinishResult> {
  let lease: Lease;
  try {
    lease = await holdLease(scope, attemptId);
  } catch (err) {
    if (err instanceof ApiError && err.code === 'conflict') return { status: 'busy', payouts: [] };
    throw err;
  }
  try {
    const ids = await finishEarlierPayouts(scope, lease);
    return { status: 'finished', payouts: await payoutsById(scope, ids) };
  } catch (err) {
    // Whoever holds the lease now finishes them, as when it was held from the start.
    if (err instanceof LeaseLost) return { status: 'busy', payouts: [] };
    throw err;
  } finally {
    await lease.release();
  }
}

export async function runPayouts(scope: OrgScope, opts: { dryRun?: boolean; runId?: string; trigger: 'manual' | 'schedule' }): Promise<PayoutRunResult> {
  const runId = opts.runId ?? newId('run');
  const createdAt = new Date().toISOString();
  const payoutsCol = scope.collection('payouts');
  const runRef = scope.collection('payoutRuns').doc(runId);
  const finished = opts.dryRun ? undefined : await runRef.get();
  if (finished?.get('status') === 'completed') return storedRun(scope, finished.data()!);
  // The lease comes before reading balances, so a second run sees what the first one left.
  const lease = opts.dryRun ? undefined : await holdLease(scope, runId);
  try {
    // Read again under the lease: another attempt of this run may have completed it while this one waited.
    const existing = opts.dryRun ? undefined : await runRef.get();
    if (existing?.get('status') === 'completed') return storedRun(scope, existing.data()!);
    if (existing && !existing.exists) await runRef.create({ id: runId, status: 'running', trigger: opts.trigger, createdAt, completedAt: null });
    if (lease) await finishEarlierPayouts(scope, lease);
    // Only the fields planning needs: at 200,000 entries whole documents would take ~380 MiB (measured).
    const approved = (await scope.collection('ledger').where('status', '==', 'approved').select('affiliateId', 'currency', 'amount', 'status', 'payoutId').get())
      .docs.map((d) => ({ ...d.data(), id: d.id }) as LedgerEntry);
    const affiliateIds = [...new Set(approved.map((e) => e.affiliateId))];
    const affiliates = new Map<string, DocumentData>();
    const db = firestore();
    for (let i = 0; i < affiliateIds.length; i += 300) {
      const snaps = await db.getAll(...affiliateIds.slice(i, i + 300).map((id) => scope.collection('affiliates').doc(id)));
      for (const s of snaps) if (s.exists) affiliates.set(s.id, s.data()!);
    }
    const { pay: plan, belowMinimum } = planPayouts(approved, (id) => payoutMinimumOf(affiliates.get(id)));
    const held = { belowMinimum: belowMinimum.slice(0, belowMinimumListed), belowMinimumCount: belowMinimum.length };
    const blockedBy = (affiliateId: string) => whyNotPaid(affiliates.get(affiliateId));
    const payable = (affiliateId: string) => !blockedBy(affiliateId);

    if (opts.dryRun) {
      return {
        id: runId, status: 'dry_run', trigger: opts.trigger, createdAt, completedAt: null,
        // The same payouts a completed run would list: the first by payout id, by affiliate.
        payouts: plan.map((p) => ({ id: deterministicId('po', runId, p.affiliateId, p.currency), affiliateId: p.affiliateId, amount: p.amount, currency: p.currency, status: payable(p.affiliateId) ? 'would_pay' : 'blocked', reason: blockedBy(p.affiliateId) ?? null, transferId: null, simulated: false }) as PayoutSummary)
          .sort((a, b) => a.id.localeCompare(b.id)).slice(0, payoutsListed).sort(byAffiliate),
        payoutCount: plan.length,
        ...held,
      };
    }

    const runLease = lease!; // only a dry run has none, and it has returned
    const payoutIds = plan.map((p) => deterministicId('po', runId, p.affiliateId, p.currency));
    const payOne = async (p: (typeof plan)[number], id: string) => {
      const ref = payoutsCol.doc(id);
      const base = { id, runId, affiliateId: p.affiliateId, currency: p.currency, createdAt, simulated: false, transferId: null };
      // A retry of this run plans the same id. A payout that exists is already decided (blocked, failed, paid,
      // cancelled; recovery above finished any an attempt left in the middle): claiming into it would add to its
      // amount and pay the sum, or pay a paid payout again. What it did not take stays approved for the next
      // run, whose ids differ.
      if ((await ref.get()).exists) return;
      // A run with many payouts takes minutes: an affiliate paused or blocked since planning (fraud found, say) or
      // whose Stripe account was disabled is read as it is now, before its money moves and again once it is claimed.
      const current = async () => (await scope.collection('affiliates').doc(p.affiliateId).get()).data();
      const blocked = whyNotPaid(await current());
      if (blocked) {
        // The money waits in the balance; the payout records why it did not move.
        await ref.create({ ...base, amount: p.amount, entryCount: 0, status: 'blocked', reason: blocked });
        return;
      }
      await ref.create({ ...base, amount: 0, entryCount: 0, status: 'claiming', reason: null });
      const claimed = await claim(scope, runLease, ref, p.entryIds);
      const affiliate = await current();
      const unpayable = whyNotPaid(affiliate) ?? notPayable(claimed.amount, affiliate, p.currency);
      if (unpayable) return cancel(scope, runLease, id, unpayable, claimed.entries);
      await markClaimed(scope, runLease, id);
      await settle(scope, runLease, { ...base, amount: claimed.amount, status: 'claimed' }, { affiliate, claimed: claimed.entries });
    };
    // Payouts are independent (own ids, own entries, transactional claims): several at a time.
    const queue = plan.map((p, i) => [p, payoutIds[i]!] as const);
    // One payout's error stops neither the others nor the wait for them: the lease is released only once no
    // payout of this run is still moving, and the run stays unfinished so a retry completes it.
    const errors: unknown[] = [];
    await Promise.all(Array.from({ length: Math.min(payoutConcurrency, queue.length) }, async () => {
      // A lost lease ends the run: every payout after it would be created only to meet the same fence.
      for (let next = queue.shift(); next && !errors.some((e) => e instanceof LeaseLost); next = queue.shift()) {
        await payOne(...next).catch((err: unknown) => void errors.push(err));
      }
    }));
    // A reversal may have been parked on a payout while this run was between Stripe's answer and settling it.
    await applyPendingReversals(scope);
    // A lost lease first: it says why the others failed too, and that nothing is to be retried under this attempt.
    if (errors.length) throw errors.find((e) => e instanceof LeaseLost) ?? errors[0];
    // The run's payouts are found by their runId, not listed on the run: a run of tens of thousands of affiliates
    // would pass a document's 1 MiB in ids, and never be marked completed. That also counts the payouts an earlier
    // attempt of a retried run made and recovery settled above (their entries are no longer approved, so this
    // attempt did not plan them).
    const completedAt = new Date().toISOString();
    await runRef.update({ status: 'completed', completedAt, ...held });
    return { id: runId, status: 'completed', trigger: opts.trigger, createdAt: existing?.get('createdAt') ?? createdAt, completedAt, ...(await payoutsOfRun(scope, runId)), ...held };
  } finally {
    await lease?.release();
  }
}

/** A run as recorded (an earlier attempt completed it, or GET /payout-runs/:id asks), with its payouts as they are now. */
export async function storedRun(scope: OrgScope, stored: DocumentData): Promise<PayoutRunResult> {
  // payoutIds: what runs completed before the run stopped listing them recorded; their payouts carry runId too.
  const { payoutIds: _listedBefore, belowMinimum, belowMinimumCount, ...run } = stored;
  const listed = (belowMinimum as BelowMinimum[] | undefined) ?? [];
  return {
    ...(run as Omit<PayoutRunResult, 'payouts' | 'payoutCount' | 'belowMinimum' | 'belowMinimumCount'>), ...(await payoutsOfRun(scope, run.id as string)),
    belowMinimum: listed, belowMinimumCount: (belowMinimumCount as number | undefined) ?? listed.length,
  };
}

const byAffiliate = (a: PayoutSummary, b: PayoutSummary) => a.affiliateId.localeCompare(b.affiliateId) || a.currency.localeCompare(b.currency);

/** The payouts named, as they are now, by affiliate. */
async function payoutsById(scope: OrgScope, payoutIds: string[]): Promise<PayoutSummary[]> {
  const out: PayoutSummary[] = [];
  for (let i = 0; i < payoutIds.length; i += 30) {
    const snap = await scope.collection('payouts').where(FieldPath.documentId(), 'in', payoutIds.slice(i, i + 30)).get();
    out.push(...snap.docs.map((d) => toPayout(d.data())));
  }
  return out.sort(byAffiliate);
}

/** The payouts a run lists: the first `payoutsListed` by id (ids are hashes: in no meaningful order), by affiliate. */
export const payoutsListed = 100;

async function payoutsOfRun(scope: OrgScope, runId: string): Promise<Pick<PayoutRunResult, 'payouts' | 'payoutCount'>> {
  const ofRun = scope.collection('payouts').where('runId', '==', runId);
  const [page, count] = await Promise.all([ofRun.orderBy(FieldPath.documentId()).limit(payoutsListed).get(), ofRun.count().get()]);
  const payouts = page.docs.map((d) => toPayout(d.data())).sort(byAffiliate);
  return { payouts, payoutCount: count.data().count };
}
