import { randomBytes, randomInt } from 'node:crypto';
import type { BulkWriter, DocumentReference, Firestore } from '@google-cloud/firestore';
import { mintClickId } from '../../../shared/domain/click-id';
import { tierMonth } from '../../../shared/domain/ledger';
import { deterministicId, newId, newLinkId } from '../../../shared/ids';
import { collections } from '../../../shared/names';

/**
 * Seed documents for scripts/bench/money.ts, shaped exactly as the product writes them:
 *  - conversions and their commission ledger entries as functions/services/ingest-state.ts (applyPostback) books
 *    them, pending; for "approved" seeds, as functions/services/conversion-lifecycle.ts (applyTransition, called by
 *    the commissions job with reason 'hold period ended') then leaves them;
 *  - the org, campaigns and affiliates as the admin API creates them, affiliates onboarded the way the dry-run
 *    payout provider onboards them (deterministic `acct_sim_…` account, payoutsEnabled true).
 * Only documents these code paths read are seeded (no clicks, links, counters, receipts or audit history).
 */

const day = 86_400_000;
export const cpaPayout = 500;
export const cpaRevenue = 800;
export const holdDays = 30;
export const minimumPayout = 5000;

export interface SeedPlan {
  orgId: string;
  campaignIds: string[];
  affiliateIds: string[];
}

export interface SeedResult {
  docs: number;
  ms: number;
}

/** Writes documents with one unthrottled BulkWriter, in bounded chunks so the process never holds them all at once. */
export async function bulkWrite(db: Firestore, docs: Iterable<[DocumentReference, Record<string, unknown>]>, opts: { signal?: AbortSignal; mode?: 'create' | 'set' } = {}): Promise<SeedResult> {
  const started = performance.now();
  // Throttling off: BulkWriter otherwise ramps up from 500 writes/s (the "500/50/5" rule), which would measure
  // the throttle rather than the emulator.
  const bw: BulkWriter = db.bulkWriter({ throttling: false });
  const failures: Error[] = [];
  let n = 0;
  try {
    for (const [ref, data] of docs) {
      const p = opts.mode === 'set' ? bw.set(ref, data) : bw.create(ref, data);
      p.catch((err: Error) => failures.push(err));
      if (++n % 10_000 === 0) {
        await bw.flush();
        opts.signal?.throwIfAborted();
        if (failures.length) break;
      }
    }
  } finally {
    await bw.close();
  }
  if (failures.length) throw new Error(`${failures.length} seed writes failed, first: ${failures[0]!.message}`);
  return { docs: n, ms: performance.now() - started };
}

export function planOrg(campaigns: number, affiliates: number): SeedPlan {
  return {
    orgId: newId('org'),
    campaignIds: Array.from({ length: campaigns }, () => newId('cmp')),
    affiliateIds: Array.from({ length: affiliates }, () => newId('aff')),
  };
}

/** The org, its campaigns and its affiliates. `accountOf` is the dry-run provider's account id for an affiliate. */
export function* orgDocs(db: Firestore, plan: SeedPlan, accountOf: (affiliateId: string) => string): Generator<[DocumentReference, Record<string, unknown>]> {
  const now = new Date().toISOString();
  const org = db.doc(`${collections.orgs}/${plan.orgId}`);
  yield [org, { id: plan.orgId, name: 'Money Benchmark Org', type: 'advertiser', plan: 'enterprise', fallbackUrl: null, createdAt: now, updatedAt: now, createdBy: 'usr_bench' }];
  for (const [i, id] of plan.campaignIds.entries()) {
    yield [org.collection(collections.campaigns).doc(id), {
      id, name: `Benchmark campaign ${i + 1}`, destinationUrl: `https://shop.example.com/landing/${i + 1}?cid={click_id}&aff={affiliate_id}`,
      status: 'active', currency: 'USD', payout: { type: 'cpa', amount: cpaPayout }, revenue: { type: 'cpa', amount: cpaRevenue },
      attributionWindowDays: 30, holdDays, caps: {}, targeting: {}, createdAt: now, updatedAt: now,
    }];
  }
  for (const [i, id] of plan.affiliateIds.entries()) {
    yield [org.collection(collections.affiliates).doc(id), {
      id, name: `Affiliate ${i + 1}`, email: `affiliate-${i + 1}@example.com`, status: 'active', payoutCurrency: 'USD', minimumPayout,
      payoutOverrides: {}, userIds: [], createdAt: now, updatedAt: now,
      // As after onboarding with the dry-run provider (functions/api/routes/money.ts).
      stripeAccountId: accountOf(id), payoutsEnabled: true,
    }];
  }
}

export interface ConversionSeed {
  kind: 'pending' | 'approved';
  count: number;
  /** Distinct per seed set, so two sets in one org never collide. */
  tag: string;
  /**
   * How many (campaign, affiliate) pairs the set is spread over; unset: every pair, as evenly as possible. The
   * commissions job approves the conversions of one pair one after another and different pairs in parallel.
   */
  groups?: number;
}

/**
 * Conversion i goes to group g = i mod groups, group g to affiliate g mod A and campaign (g div A) mod C: with the
 * default grouping every affiliate gets the same number of conversions, spread over the campaigns. Each yields the conversion, then its commission ledger entry.
 * Also returns, via `tierGroups`, how many distinct (campaign, affiliate, month) tier counters the set spans.
 */
export function* conversionDocs(db: Firestore, plan: SeedPlan, seed: ConversionSeed, tierGroups?: Set<string>): Generator<[DocumentReference, Record<string, unknown>]> {
  const org = db.doc(`${collections.orgs}/${plan.orgId}`);
  const signingKey = randomBytes(32).toString('hex'); // nothing verifies these click ids again
  const links = new Map<string, string>();
  const now = Date.now();
  const a = plan.affiliateIds.length;
  for (let i = 0; i < seed.count; i++) {
    const g = seed.groups === undefined ? i : i % seed.groups;
    const affiliateId = plan.affiliateIds[g % a]!;
    const campaignId = plan.campaignIds[Math.floor(g / a) % plan.campaignIds.length]!;
    const pair = `${campaignId}/${affiliateId}`;
    let linkId = links.get(pair);
    if (!linkId) links.set(pair, (linkId = newLinkId()));
    // Pending: booked 30-50 days ago, so the 30-day hold has ended. Approved: booked 31-60 days ago, approved when due.
    const created = seed.kind === 'pending' ? now - holdDays * day - randomInt(1, 20 * day) : now - holdDays * day - randomInt(day, 30 * day);
    const createdAt = new Date(created).toISOString();
    const approvableAt = new Date(created + holdDays * day).toISOString();
    const clickId = mintClickId(signingKey, linkId, created - randomInt(60_000, 3 * day));
    const txnId = `bench-${seed.tag}-${i}`;
    const id = deterministicId('cnv', plan.orgId, 'txn', txnId);
    tierGroups?.add(`${campaignId}_${affiliateId}_${tierMonth(createdAt)}`);
    // Exactly the document applyPostback creates for an attributed, non-fraud conversion of a CPA campaign.
    const pending = {
      id, clickId, linkId, campaignId, affiliateId, txnId, event: 'sale', amount: randomInt(1_000, 20_000), currency: 'USD', revenue: cpaRevenue, payout: cpaPayout,
      status: 'pending', reasons: [] as string[], fraudHold: false, affiliateHeld: false, via: 'postback', createdAt, approvableAt, updatedAt: createdAt,
      payoutRule: { type: 'cpa', amount: cpaPayout },
    };
    const entryId = deterministicId('led', id, 'commission');
    const entry = { id: entryId, affiliateId, conversionId: id, campaignId, type: 'commission', amount: cpaPayout, currency: 'USD', status: 'pending', approvableAt, createdAt };
    if (seed.kind === 'pending') {
      yield [org.collection(collections.conversions).doc(id), pending];
      yield [org.collection(collections.ledger).doc(entryId), entry];
    } else {
      // What applyTransition leaves after the commissions job approved it (no volume tiers, so no adjustment entry).
      const at = new Date(created + holdDays * day + randomInt(60_000, 15 * 60_000)).toISOString();
      yield [org.collection(collections.conversions).doc(id), { ...pending, status: 'approved', payout: cpaPayout, updatedAt: at, reasons: ['hold period ended'], approvedAt: at }];
      yield [org.collection(collections.ledger).doc(entryId), { ...entry, status: 'approved', approvedAt: at }];
    }
  }
}

/** Documents for the BulkWriter baseline: ledger-entry-sized documents in a scratch collection of the same org. */
export function* baselineDocs(db: Firestore, plan: SeedPlan, count: number, tag: string): Generator<[DocumentReference, Record<string, unknown>]> {
  const col = db.collection(`${collections.orgs}/${plan.orgId}/benchBaseline_${tag}`);
  const now = new Date().toISOString();
  for (let i = 0; i < count; i++) {
    const id = deterministicId('led', tag, String(i));
    yield [col.doc(id), {
      id, affiliateId: plan.affiliateIds[i % plan.affiliateIds.length], conversionId: deterministicId('cnv', tag, String(i)), campaignId: plan.campaignIds[0],
      type: 'commission', amount: cpaPayout, currency: 'USD', status: 'approved', approvableAt: now, createdAt: now, approvedAt: now,
    }];
  }
}
