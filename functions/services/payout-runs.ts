import { FieldPath, type DocumentData } from '@google-cloud/firestore';
import { planPayouts, type LedgerEntry } from '../../shared/domain/ledger';
import { conflict } from '../../shared/errors';
import { deterministicId, newId } from '../../shared/ids';
import { firestore } from '../adapters/firestore';
import { payoutProvider } from '../adapters/payouts';
import type { OrgScope } from './tenancy';

/**
 * A payout run, exactly once in money:
 *  1. A lease per organisation keeps two runs from overlapping.
 *  2. Payouts left `claimed` by a run that died are finished first, with their own ids.
 *  3. Approved, unclaimed entries are grouped per affiliate and currency; each group that reaches the
 *     affiliate's minimum becomes a payout whose deterministic id is the Stripe idempotency key, and its
 *     entries are claimed in transactions that only move entries still `approved` and unclaimed.
 *  4. Each claimed payout is transferred; a crash after Stripe accepted it and before we recorded it is
 *     harmless, because the retry sends the same idempotency key and Stripe answers with the same transfer.
 */
const leaseMs = 15 * 60_000;
const claimChunk = 400; // Firestore allows 500 writes per transaction
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
  payouts: PayoutSummary[];
}

export const toPayout = (d: DocumentData): PayoutSummary => ({
  id: d.id, affiliateId: d.affiliateId, amount: d.amount, currency: d.currency, status: d.status, reason: d.reason ?? null,
  transferId: d.transferId ?? null, simulated: d.simulated ?? false,
});

async function acquireLease(scope: OrgScope, runId: string): Promise<void> {
  const ref = scope.collection('locks').doc('payout-run');
  await firestore().runTransaction(async (tx) => {
    const lock = await tx.get(ref);
    const holder = lock.get('runId') as string | undefined;
    if (holder && holder !== runId && (lock.get('expiresAt') as number) > Date.now()) {
      throw conflict(`Payout run ${holder} is in progress; try again when it has finished`);
    }
    tx.set(ref, { runId, expiresAt: Date.now() + leaseMs });
  });
}

async function renewLease(scope: OrgScope, runId: string): Promise<void> {
  const ref = scope.collection('locks').doc('payout-run');
  await firestore().runTransaction(async (tx) => {
    if ((await tx.get(ref)).get('runId') === runId) tx.update(ref, { expiresAt: Date.now() + leaseMs });
  });
}

async function releaseLease(scope: OrgScope, runId: string): Promise<void> {
  const ref = scope.collection('locks').doc('payout-run');
  await firestore().runTransaction(async (tx) => {
    if ((await tx.get(ref)).get('runId') === runId) tx.delete(ref);
  });
}

/** Claims entries into the payout, chunk by chunk; returns what was actually claimed. */
type ClaimedEntry = { id: string; type: string; conversionId: string };

async function claim(scope: OrgScope, payoutRef: FirebaseFirestore.DocumentReference, entryIds: string[]): Promise<{ amount: number; entries: ClaimedEntry[] }> {
  const ledger = scope.collection('ledger');
  const claimed: ClaimedEntry[] = [];
  let total = 0;
  for (let i = 0; i < entryIds.length; i += claimChunk) {
    const chunk = entryIds.slice(i, i + claimChunk);
    await firestore().runTransaction(async (tx) => {
      const snaps = await tx.getAll(...chunk.map((id) => ledger.doc(id)));
      const payout = await tx.get(payoutRef);
      let add = 0;
      const ids: ClaimedEntry[] = [];
      for (const s of snaps) {
        // Only entries still approved and unclaimed move: another run, a reversal or a retry may have got there first.
        if (!s.exists || s.get('status') !== 'approved' || s.get('payoutId')) continue;
        tx.update(s.ref, { status: 'claimed', payoutId: payoutRef.id });
        add += s.get('amount') as number;
        ids.push({ id: s.id, type: s.get('type') as string, conversionId: s.get('conversionId') as string });
      }
      const amount = (payout.get('amount') as number) + add;
      tx.update(payoutRef, { amount, entryCount: (payout.get('entryCount') as number) + ids.length });
      return { amount, ids };
    }).then(({ amount, ids }) => {
      // Assigned after the commit: a retried transaction must not count its entries twice.
      total = amount;
      claimed.push(...ids);
    });
  }
  return { amount: total, entries: claimed };
}

/**
 * Moves a payout's entries (and, for commissions, their conversions) on. The entries come from the claim
 * when this run made it; a payout recovered from an earlier run finds them by query.
 */
async function setEntries(scope: OrgScope, payoutId: string, from: string, to: Record<string, unknown>, conversionsTo?: string, known?: ClaimedEntry[]): Promise<void> {
  const db = firestore();
  const entries = known ?? (await scope.collection('ledger').where('payoutId', '==', payoutId).where('status', '==', from).select('type', 'conversionId').get())
    .docs.map((d) => ({ id: d.id, type: d.get('type') as string, conversionId: d.get('conversionId') as string }));
  for (let i = 0; i < entries.length; i += claimChunk) {
    const batch = db.batch();
    for (const e of entries.slice(i, i + claimChunk)) {
      batch.update(scope.collection('ledger').doc(e.id), to);
      if (conversionsTo && e.type === 'commission') batch.update(scope.collection('conversions').doc(e.conversionId), { status: conversionsTo });
    }
    await batch.commit();
  }
}

/** Sends a claimed payout to the provider and records the outcome. */
async function settle(scope: OrgScope, payout: DocumentData, knownAffiliate?: DocumentData, claimed?: ClaimedEntry[]): Promise<void> {
  const ref = scope.collection('payouts').doc(payout.id as string);
  const affiliate = knownAffiliate ?? (await scope.collection('affiliates').doc(payout.affiliateId as string).get()).data();
  const outcome = await payoutProvider().transfer({
    payoutId: payout.id, amount: payout.amount, currency: payout.currency, destinationAccountId: affiliate?.stripeAccountId,
    transferGroup: payout.runId, metadata: { orgId: scope.orgId, affiliateId: payout.affiliateId, payoutId: payout.id, runId: payout.runId },
    description: `ABP payout ${payout.id}`,
  });
  const at = new Date().toISOString();
  if (outcome.ok) {
    await ref.update({ status: 'paid', transferId: outcome.transferId, simulated: outcome.simulated, paidAt: at, reason: null });
    await setEntries(scope, payout.id, 'claimed', { status: 'paid', paidAt: at }, 'paid', claimed);
  } else if (outcome.reason === 'indeterminate') {
    // The transfer may exist: keep the claim, and let the next run retry with the same idempotency key.
    await ref.update({ reason: outcome.reason, lastError: outcome.message });
  } else {
    // A definite failure: the money goes back to the affiliate's balance, with the reason on the payout.
    await setEntries(scope, payout.id, 'claimed', { status: 'approved', payoutId: null }, undefined, claimed);
    await ref.update({ status: 'failed', reason: outcome.reason, lastError: outcome.message, failedAt: at });
  }
}

export async function runPayouts(scope: OrgScope, opts: { dryRun?: boolean; runId?: string; trigger: 'manual' | 'schedule' }): Promise<PayoutRunResult> {
  const runId = opts.runId ?? newId('run');
  const createdAt = new Date().toISOString();
  const payoutsCol = scope.collection('payouts');
  const runRef = scope.collection('payoutRuns').doc(runId);
  const existing = opts.dryRun ? undefined : await runRef.get();
  if (existing?.get('status') === 'completed') return existing.data() as PayoutRunResult;
  // The lease comes before reading balances, so a second run sees what the first one left.
  if (!opts.dryRun) await acquireLease(scope, runId);
  // Keep the lease while the run works, however long a large run takes.
  const renewal = opts.dryRun ? undefined : setInterval(() => void renewLease(scope, runId).catch(() => undefined), leaseMs / 3);
  renewal?.unref();
  try {
    if (existing && !existing.exists) await runRef.create({ id: runId, status: 'running', trigger: opts.trigger, createdAt, completedAt: null, payoutIds: [] });
    if (!opts.dryRun) {
      // Finish what an earlier run claimed but did not settle (it crashed, or Stripe's answer was lost).
      const unfinished = await payoutsCol.where('status', '==', 'claimed').get();
      for (const d of unfinished.docs) await settle(scope, d.data());
    }
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
    const plan = planPayouts(approved, (id) => (affiliates.get(id)?.minimumPayout as number | undefined) ?? 0);
    const payable = (affiliateId: string) => Boolean(affiliates.get(affiliateId)?.stripeAccountId && affiliates.get(affiliateId)?.payoutsEnabled);

    if (opts.dryRun) {
      return {
        id: runId, status: 'dry_run', trigger: opts.trigger, createdAt, completedAt: null,
        payouts: plan.map((p) => ({ id: deterministicId('po', runId, p.affiliateId, p.currency), affiliateId: p.affiliateId, amount: p.amount, currency: p.currency, status: payable(p.affiliateId) ? 'would_pay' : 'blocked', reason: payable(p.affiliateId) ? null : 'no_payout_account', transferId: null, simulated: false })),
      };
    }

    const payoutIds = plan.map((p) => deterministicId('po', runId, p.affiliateId, p.currency));
    const payOne = async (p: (typeof plan)[number], id: string) => {
      const ref = payoutsCol.doc(id);
      const base = { id, runId, affiliateId: p.affiliateId, currency: p.currency, createdAt, simulated: false, transferId: null };
      if (!payable(p.affiliateId)) {
        // The money waits in the balance; the payout records why it did not move.
        await ref.set({ ...base, amount: p.amount, entryCount: 0, status: 'blocked', reason: 'no_payout_account' });
        return;
      }
      if (!(await ref.get()).exists) await ref.create({ ...base, amount: 0, entryCount: 0, status: 'claiming', reason: null });
      const claimed = await claim(scope, ref, p.entryIds);
      if (claimed.amount <= 0) {
        await setEntries(scope, id, 'claimed', { status: 'approved', payoutId: null });
        await ref.update({ status: 'cancelled', reason: 'nothing_left_to_claim' });
        return;
      }
      await ref.update({ status: 'claimed' });
      await settle(scope, { ...base, amount: claimed.amount, status: 'claimed' }, affiliates.get(p.affiliateId), claimed.entries);
    };
    // Payouts are independent (own ids, own entries, transactional claims): several at a time.
    const queue = plan.map((p, i) => [p, payoutIds[i]!] as const);
    await Promise.all(Array.from({ length: Math.min(payoutConcurrency, queue.length) }, async () => {
      for (let next = queue.shift(); next; next = queue.shift()) await payOne(...next);
    }));
    const completedAt = new Date().toISOString();
    await runRef.update({ status: 'completed', completedAt, payoutIds });
    return { id: runId, status: 'completed', trigger: opts.trigger, createdAt: existing?.get('createdAt') ?? createdAt, completedAt, payouts: await payoutsOfRun(scope, payoutIds) };
  } finally {
    clearInterval(renewal);
    if (!opts.dryRun) await releaseLease(scope, runId);
  }
}

export async function payoutsOfRun(scope: OrgScope, payoutIds: string[]): Promise<PayoutSummary[]> {
  if (!payoutIds.length) return [];
  const out: PayoutSummary[] = [];
  for (let i = 0; i < payoutIds.length; i += 30) {
    const snap = await scope.collection('payouts').where(FieldPath.documentId(), 'in', payoutIds.slice(i, i + 30)).get();
    out.push(...snap.docs.map((d) => toPayout(d.data())));
  }
  return out.sort((a, b) => a.affiliateId.localeCompare(b.affiliateId) || a.currency.localeCompare(b.currency));
}
