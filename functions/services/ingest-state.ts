import { FieldValue, Timestamp, type DocumentData, type DocumentReference, type DocumentSnapshot, type Firestore } from '@google-cloud/firestore';
import { capPeriod, cappedWindows, capsBroken, type CapCounted, type CapUsage, type CapWindow } from '../../shared/domain/caps';
import { verifyClickId, type ClickIdParts } from '../../shared/domain/click-id';
import { payoutFor, revenueFor } from '../../shared/domain/commission';
import type { ConversionEvent, PostbackEvent } from '../../shared/domain/events';
import type { Affiliate, Campaign } from '../../shared/domain/schemas';
import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { secrets } from '../adapters/local-secrets';
import { ledgerEntryId } from './conversion-lifecycle';
import { counterRef } from './counters';
import type { Settled } from '../../shared/group-commit';
import { groupedWrites } from './grouped-writes';
import { OrgScope } from './tenancy';

/**
 * The state worker's conversions: attribution, the conversion document, its pending commission and the live
 * counters, written exactly once per conversion id however often Pub/Sub delivers the postback.
 *
 * Like clicks (click-state.ts), the postbacks a worker has in hand at once are booked together: two reads
 * for the whole group (the conversions and the links their click ids name; then the campaigns, affiliates
 * and clicks those point to) and one atomic batch that creates every conversion and commission (create
 * fails if one already exists, and the whole batch with it, so no counter is ever incremented twice). When
 * that batch fails on a conflict it is read and tried once more, then each postback is booked on its own in a
 * transaction that first checks whether its conversion exists (grouped-writes.ts). The group's reads are not transactional: a campaign edited between them
 * and the commit is seen as it was a few milliseconds earlier, as if the postback had come first.
 *
 * A conversion for a campaign with conversion or payout caps (shared/domain/caps.ts) is booked in a
 * transaction of its own that reads the campaign's usage for the day and month, so no booking passes a cap
 * however many instances book at once; its group's other conversions still go in the batch. The conversion
 * records what it counted (`capCounted`): rejecting or reversing it later gives the room back, and a volume
 * tier that changes its payout at approval changes the payout counted (conversion-lifecycle.ts).
 */
const day = 86_400_000;
/** A conversion reported this soon after its click is held for review. */
const minClickToConversionMs = 3_000;
/** A conversion takes at most three writes (conversion, commission, counter); a Firestore commit takes 500. */
const maxConversionsPerCommit = 150;
/** Groups in flight at once, as for clicks. */
const concurrentCommits = 4;

interface Attribution {
  linkId: string | null;
  campaignId: string | null;
  affiliateId: string | null;
  campaign?: Campaign;
  affiliate?: Affiliate;
  click?: DocumentData;
  reasons: string[];
  fraudReasons: string[];
}

/** A conversion document as stored (and as read back for a duplicate). */
type ConversionDoc = DocumentData;

/** What booking one conversion writes: the conversion, its commission, and what it adds to its counter. */
interface Booking {
  ref: DocumentReference;
  conversion: ConversionDoc;
  commission?: { ref: DocumentReference; data: DocumentData };
  counter?: { ref: DocumentReference; base: Record<string, string>; currency: string; revenue: number; payout: number };
  /** The campaign's cap usage documents it counts in. */
  capUsage?: { ref: DocumentReference; data: DocumentData }[];
}

type Usage = Partial<Record<CapWindow, CapUsage>>;

/**
 * The campaign's usage documents for the windows it caps, at the conversion's time: one per campaign, window
 * and currency (payout caps are in the campaign's currency; a campaign that changes currency starts afresh).
 */
function capUsageRefs(scope: OrgScope, e: PostbackEvent, a: Attribution): { window: CapWindow; period: string; ref: DocumentReference }[] {
  if (!a.campaign || !a.campaignId) return [];
  return cappedWindows(a.campaign.caps).map((window) => {
    const period = capPeriod(window, e.occurredAt);
    return { window, period, ref: scope.collection('capUsage').doc(`${a.campaignId}_${period}_${a.campaign!.currency}`) };
  });
}

/** Whether booking this conversion must read its campaign's cap usage first (in a transaction). */
function needsCapCheck(a: Attribution): boolean {
  return a.reasons.length === 0 && cappedWindows(a.campaign?.caps).length > 0;
}

/** Step one of attribution: the signed click id names the link, whose index says which organisation owns it. */
function linkOf(e: PostbackEvent): { parts: ClickIdParts; ref: DocumentReference } | undefined {
  const parts = verifyClickId(secrets().clickSigningKey, e.clickId);
  return parts && { parts, ref: firestore().doc(`${collections.linkIndex}/${parts.linkId}`) };
}

/** Step two: the campaign, affiliate and click documents, for a link of the postback's own organisation. */
function detailRefs(scope: OrgScope, e: PostbackEvent, link: DocumentSnapshot | undefined): DocumentReference[] | undefined {
  if (!link?.exists || link.get('orgId') !== scope.orgId) return undefined;
  const { campaignId, affiliateId } = link.data() as { campaignId: string; affiliateId: string };
  return [scope.collection('campaigns').doc(campaignId), scope.collection('affiliates').doc(affiliateId), scope.collection('clicks').doc(e.clickId)];
}

/** Who gets credit for a postback, from what the two steps read. The click document is used when it is there. */
function attribute(scope: OrgScope, e: PostbackEvent, parts: ClickIdParts | undefined, link: DocumentSnapshot | undefined, details: DocumentSnapshot[] | undefined): Attribution {
  const none = (reason: string): Attribution => ({ linkId: null, campaignId: null, affiliateId: null, reasons: [reason], fraudReasons: [] });
  if (!parts) return none('invalid_click_id');
  if (!link?.exists) return none('unknown_click');
  // A click id minted for another organisation's link: record, never credit, and reveal nothing about it.
  if (link.get('orgId') !== scope.orgId) return none('foreign_click');
  const { campaignId, affiliateId } = link.data() as { campaignId: string; affiliateId: string };
  const [campaign, affiliate, click] = details!;
  const a: Attribution = { linkId: parts.linkId, campaignId, affiliateId, reasons: [], fraudReasons: [] };
  if (!campaign!.exists || !affiliate!.exists) return { ...a, reasons: ['unknown_click'] };
  a.campaign = campaign!.data() as Campaign;
  a.affiliate = affiliate!.data() as Affiliate;
  a.click = click!.exists ? click!.data() : undefined;
  const sinceClick = Date.parse(e.occurredAt) - parts.clickedAt;
  if (sinceClick > a.campaign.attributionWindowDays * day) a.reasons.push('outside_window');
  if (sinceClick < -5 * 60_000) a.reasons.push('before_click');
  if (a.affiliate.status !== 'active') a.reasons.push('affiliate_inactive');
  if (a.campaign.status === 'archived') a.reasons.push('campaign_archived');
  if (e.currency && e.currency !== a.campaign.currency) a.reasons.push('currency_mismatch');
  if (a.click?.isBot) a.fraudReasons.push('bot_click');
  if (sinceClick >= 0 && sinceClick < minClickToConversionMs) a.fraudReasons.push('click_to_conversion_too_fast');
  return a;
}

/**
 * The conversion, priced, with its commission as pending unless rejected. `usage` is the campaign's cap usage
 * (read in the caller's transaction) when it caps conversions: a conversion past a cap is rejected.
 */
function book(scope: OrgScope, e: PostbackEvent, a: Attribution, usage?: Usage): Booking {
  const currency = a.campaign?.currency ?? e.currency ?? 'USD';
  const override = a.affiliate?.payoutOverrides?.[a.campaignId ?? ''];
  const priced = a.reasons.length === 0 && a.campaign ? payoutFor(override ?? a.campaign.payout, e.amount) : 0;
  const reasons = usage && a.reasons.length === 0 ? capsBroken(a.campaign?.caps, usage, priced) : a.reasons;
  const rejected = reasons.length > 0;
  const payout = rejected ? 0 : priced;
  const revenue = rejected || !a.campaign ? 0 : revenueFor(a.campaign.revenue, e.amount);
  const approvableAt = new Date(Date.parse(e.occurredAt) + (a.campaign?.holdDays ?? 0) * day).toISOString();
  const booking: Booking = {
    ref: scope.collection('conversions').doc(e.eventId),
    conversion: {
      id: e.eventId, clickId: e.clickId, linkId: a.linkId, campaignId: a.campaignId, affiliateId: a.affiliateId,
      txnId: e.txnId, event: e.event, amount: e.amount, currency, revenue, payout,
      status: rejected ? 'rejected' : 'pending', reasons: [...reasons, ...a.fraudReasons], fraudHold: a.fraudReasons.length > 0,
      via: e.via, createdAt: e.occurredAt, approvableAt: rejected ? null : approvableAt, updatedAt: e.occurredAt,
      // The rule it was booked under: approval prices the volume tier with this rule, not with a later edit.
      payoutRule: rejected ? null : (override ?? a.campaign?.payout ?? null),
    },
  };
  if (rejected || !a.campaignId || !a.affiliateId) return booking;
  if (payout > 0) {
    const entryId = ledgerEntryId(e.eventId, 'commission');
    booking.commission = {
      ref: scope.collection('ledger').doc(entryId),
      data: {
        id: entryId, affiliateId: a.affiliateId, conversionId: e.eventId, campaignId: a.campaignId, type: 'commission',
        amount: payout, currency, status: 'pending', approvableAt, createdAt: e.occurredAt,
      },
    };
  }
  const c = counterRef(scope, e.occurredAt, a.campaignId, a.affiliateId, e.eventId);
  booking.counter = { ...c, currency, revenue, payout };
  if (usage) {
    const windows = capUsageRefs(scope, e, a);
    // What it counted where, so that a later rejection or reversal can give the room back (conversion-lifecycle.ts).
    booking.conversion.capCounted = { usageIds: windows.map((w) => w.ref.id), payout } satisfies CapCounted;
    booking.capUsage = windows.map(({ window, period, ref }) => ({
      ref,
      data: {
        campaignId: a.campaignId, window, period, currency, conversions: FieldValue.increment(1), payout: FieldValue.increment(payout),
        // Kept a while past its window for support questions, then removed by Firestore's TTL policy.
        expireAt: Timestamp.fromMillis(Date.parse(e.occurredAt) + (window === 'daily' ? 35 : 400) * day),
      },
    }));
  }
  return booking;
}

const commitConversions = groupedWrites(bookGroup, bookAlone, {
  maxItems: maxConversionsPerCommit,
  maxConcurrent: concurrentCommits,
  keyOf: (e: PostbackEvent) => `${e.orgId}/${e.eventId}`,
});

/**
 * Attributes a postback and books the conversion with its commission as pending. Returns the conversion
 * event for analytics; on redelivery, the already booked conversion (so analytics still gets it once).
 */
export async function applyPostback(e: PostbackEvent): Promise<ConversionEvent> {
  const doc = await commitConversions(e);
  return {
    type: 'conversion', eventId: doc.id, orgId: e.orgId, clickId: doc.clickId, linkId: doc.linkId, campaignId: doc.campaignId, affiliateId: doc.affiliateId,
    txnId: doc.txnId, event: doc.event, amount: doc.amount, currency: doc.currency, revenue: doc.revenue, payout: doc.payout,
    status: doc.status, reasons: doc.reasons, occurredAt: doc.createdAt,
  };
}

/**
 * One postback in a transaction of its own: the careful path, for a group that could not be committed whole,
 * and the only path for a campaign with caps (its usage must be read where it is written). It reads again what
 * the group read, so that the conversion's existence and the usage it counts against are checked in one place.
 */
async function bookAlone(e: PostbackEvent): Promise<ConversionDoc> {
  const scope = OrgScope.system(e.orgId, 'state-writer');
  return firestore().runTransaction(async (tx) => {
    const existing = await tx.get(scope.collection('conversions').doc(e.eventId));
    if (existing.exists) return existing.data()!;
    const link = linkOf(e);
    const linkSnap = link && (await tx.get(link.ref));
    const refs = detailRefs(scope, e, linkSnap);
    const details = refs && (await tx.getAll(...refs));
    const a = attribute(scope, e, link?.parts, linkSnap, details);
    let usage: Usage | undefined;
    if (needsCapCheck(a)) {
      const windows = capUsageRefs(scope, e, a);
      const snaps = await tx.getAll(...windows.map((w) => w.ref));
      usage = Object.fromEntries(windows.map((w, i) => [w.window, { conversions: Number(snaps[i]!.get('conversions') ?? 0), payout: Number(snaps[i]!.get('payout') ?? 0) }]));
    }
    const b = book(scope, e, a, usage);
    tx.create(b.ref, b.conversion);
    if (b.commission) tx.create(b.commission.ref, b.commission.data);
    if (b.counter) tx.set(b.counter.ref, counterFields(b.counter.base, [b.counter]), { merge: true });
    for (const u of b.capUsage ?? []) tx.set(u.ref, u.data, { merge: true });
    return b.conversion;
  });
}

/**
 * Two reads and one atomic commit for the whole group; throws (and writes nothing) on any conflict. An item
 * that cannot be prepared (an id Firestore refuses, a campaign whose payout rule does not price) is rejected
 * on its own and left out of the batch.
 */
async function bookGroup(events: PostbackEvent[]): Promise<Settled<ConversionDoc>[]> {
  const db = firestore();
  const results: (Settled<ConversionDoc> | undefined)[] = new Array(events.length);
  const attempt = <V>(i: number, f: () => V): V | undefined => {
    try {
      return f();
    } catch (reason) {
      results[i] = { status: 'rejected', reason };
      return undefined;
    }
  };
  const scopes = new Map<string, OrgScope>();
  const scopeOf = (orgId: string) => scopes.get(orgId) ?? scopes.set(orgId, OrgScope.system(orgId, 'state-writer')).get(orgId)!;
  const plans = events.map((e, i) => attempt(i, () => ({ conversion: scopeOf(e.orgId).collection('conversions').doc(e.eventId), link: linkOf(e) })));
  const firstRead = await readAll(db, plans.map((p) => (p ? [p.conversion, p.link?.ref] : [])));
  const detailed = events.map((e, i) => {
    const existing = firstRead.get(i, 0);
    return existing && !existing.exists ? attempt(i, () => detailRefs(scopeOf(e.orgId), e, firstRead.get(i, 1))) : undefined;
  });
  const secondRead = await readAll(db, detailed.map((refs) => refs ?? []));

  // No two items of a group are the same postback: groupedWrites hands a repeat delivery the first one's outcome.
  const batch = db.batch();
  let booked = 0;
  /** Conversions of campaigns with caps, by campaign: booked after the batch, each in its own transaction (bookAlone). */
  const cappedByCampaign = new Map<string, number[]>();
  const counters = new Map<string, { ref: DocumentReference; base: Record<string, string>; parts: NonNullable<Booking['counter']>[] }>();
  events.forEach((e, i) => {
    if (results[i]) return; // could not be prepared
    const existing = firstRead.get(i, 0)!;
    if (existing.exists) {
      results[i] = { status: 'fulfilled', value: existing.data()! };
      return;
    }
    const scope = scopeOf(e.orgId);
    const a = attempt(i, () => attribute(scope, e, plans[i]!.link?.parts, firstRead.get(i, 1), detailed[i]?.map((_, j) => secondRead.get(i, j)!)));
    if (!a) return;
    if (needsCapCheck(a)) {
      const key = `${e.orgId}/${a.campaignId}`;
      cappedByCampaign.set(key, [...(cappedByCampaign.get(key) ?? []), i]);
      return;
    }
    const b = attempt(i, () => book(scope, e, a));
    if (!b) return;
    batch.create(b.ref, b.conversion);
    if (b.commission) batch.create(b.commission.ref, b.commission.data);
    if (b.counter) {
      const path = b.counter.ref.path;
      const c = counters.get(path) ?? counters.set(path, { ref: b.counter.ref, base: b.counter.base, parts: [] }).get(path)!;
      c.parts.push(b.counter);
    }
    booked++;
    results[i] = { status: 'fulfilled', value: b.conversion };
  });
  if (booked) {
    // One write per counter document, however many of the group's conversions it counts.
    for (const c of counters.values()) batch.set(c.ref, counterFields(c.base, c.parts), { merge: true });
    await batch.commit();
  }
  // One campaign's conversions one at a time (they count against the same usage documents and would only
  // wait on each other's transactions); different campaigns at once.
  await Promise.all(
    [...cappedByCampaign.values()].map(async (chain) => {
      for (const i of chain) {
        try {
          results[i] = { status: 'fulfilled', value: await bookAlone(events[i]!) };
        } catch (reason) {
          results[i] = { status: 'rejected', reason };
        }
      }
    }),
  );
  return results.map((r) => r!);
}

/** The increments a counter document takes for the conversions booked on it. */
function counterFields(base: Record<string, string>, parts: { currency: string; revenue: number; payout: number }[]): DocumentData {
  const revenue: Record<string, number> = {};
  const payout: Record<string, number> = {};
  for (const p of parts) {
    revenue[p.currency] = (revenue[p.currency] ?? 0) + p.revenue;
    payout[p.currency] = (payout[p.currency] ?? 0) + p.payout;
  }
  const increments = (sums: Record<string, number>) => Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, FieldValue.increment(v)]));
  return { ...base, conversions: FieldValue.increment(parts.length), revenue: increments(revenue), payout: increments(payout) };
}

/**
 * Reads, in one call, a list of documents per item (an entry may be undefined: nothing to read there),
 * each distinct document once; `get(item, k)` answers the item's k-th document.
 */
async function readAll(db: Firestore, perItem: (DocumentReference | undefined)[][]) {
  const unique = new Map<string, DocumentReference>();
  for (const refs of perItem) for (const ref of refs) if (ref) unique.set(ref.path, ref);
  const snaps = unique.size ? await db.getAll(...unique.values()) : [];
  const byPath = new Map(snaps.map((s) => [s.ref.path, s]));
  return { get: (item: number, k: number) => { const ref = perItem[item]![k]; return ref && byPath.get(ref.path); } };
}
