import { FieldValue, Timestamp, type DocumentData, type DocumentReference, type DocumentSnapshot, type Transaction } from '@google-cloud/firestore';
import { capPeriod, cappedWindows, capsBroken, type CapUsage, type CapWindow } from '../../shared/domain/caps';
import { verifyClickId, type ClickIdParts } from '../../shared/domain/click-id';
import { namedRequest, withNamed } from '../../shared/domain/receipt';
import { rebooks, rejectedForItsClick } from '../../shared/domain/rebooking';
import { payoutFor, revenueFor } from '../../shared/domain/commission';
import type { ConversionEvent, PostbackEvent } from '../../shared/domain/events';
import type { Affiliate, Campaign } from '../../shared/domain/schemas';
import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { secrets } from '../adapters/local-secrets';
import { ledgerEntryId } from './conversion-lifecycle';
import { conversionEventOf, recordedAfter, type AnalyticsVersion } from './conversion-analytics';
import { counterRef } from './counters';
import { deterministicId } from '../../shared/ids';
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
 * Conversions for a campaign with conversion or payout caps (shared/domain/caps.ts) are booked after the batch,
 * the group's conversions of one campaign in one transaction that reads the campaign's usage for the day and
 * month (bookTogether), so no booking passes a cap however many instances book at once. A conversion records
 * the usage documents it counted in (`capUsageIds`): rejecting or reversing it later gives the room back, and
 * a volume tier that changes its payout at approval changes the payout counted (conversion-lifecycle.ts).
 */
const day = 86_400_000;
/** A conversion reported this soon after its click is held for review. */
const minClickToConversionMs = 3_000;
/**
 * A conversion takes at most three writes (conversion, commission, counter). Firestore no longer counts a
 * commit's writes (it caps the request at 10 MiB), but a smaller commit fails and retries cheaper.
 */
const maxConversionsPerCommit = 150;
/**
 * A capped campaign's conversions booked in one transaction, at most this many: a transaction that reads and
 * writes fewer documents holds fewer locks and is retried cheaper when it meets another.
 */
const maxCappedPerTransaction = 100;
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
  /** Books again over a conversion rejected for its click id (isFinal): written over it, not created. */
  replaces?: boolean;
  /** The campaign's cap usage documents it counts in, and the payout it adds to each. */
  capUsage?: { ref: DocumentReference; base: DocumentData; payout: number }[];
  /** The receipt naming this event's request, when it does not yet (see receiptNaming). */
  receipt?: ReceiptWrite;
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

/**
 * Whether an already booked conversion is this postback's outcome: it is, unless the postback re-books it, which
 * only a click of the conversion's own organisation does (`link`: the click's link index, read with it). Another
 * organisation's click would be rejected again, and anyone can mint those: each would re-book the sale and grow
 * its receipt, until the receipt passed Firestore's 1 MiB and the real postback could not be recorded.
 */
function isFinal(existing: DocumentSnapshot, e: PostbackEvent, link: DocumentSnapshot | undefined): boolean {
  return existing.exists && !rebooks(existing.data()!, e.clickId, () => link?.exists === true && link.get('orgId') === e.orgId);
}

/**
 * Whether this postback's request was answered `duplicate` by an earlier request naming the same click (a retry
 * with another amount, a pixel beside the postback): the receipt names that request for the click, whose event
 * went out before its name was written, so it books the conversion and this one books nothing. A click's name
 * never changes once written (shared/domain/receipt.ts), so the named request's own event is never skipped.
 * Between different clicks the re-booking rule decides. A click without a name yet (no receipt: the milliseconds
 * between the first request's publish and its receipt), or an event from before requests were named, cannot tell:
 * the event is booked as it comes, and names its own request (receiptNaming).
 */
function superseded(receipt: DocumentSnapshot | undefined, e: PostbackEvent): boolean {
  if (!receipt?.exists || e.intakeId === undefined) return false;
  const named = namedRequest(receipt.get('named'), e.clickId);
  return named !== undefined && named !== e.intakeId;
}

const receiptRef = (scope: OrgScope, e: PostbackEvent) => scope.collection('postbackReceipts').doc(e.eventId);

/** A receipt written with a booking: created if there was none, else updated only if unchanged since it was read. */
type ReceiptWrite = { ref: DocumentReference; data: DocumentData; create: true } | { ref: DocumentReference; data: DocumentData; create: false; lastUpdateTime: Timestamp };

/**
 * The receipt names, per click, the request whose event booked the conversion under that click, in the booking's
 * own commit: an event handled before its request (or a repeat) has written the receipt, or before its click
 * has a name, names its own request, created if there is no receipt and otherwise only if the receipt is still
 * as read. The request that reaches the receipt later is then answered as booked: `accepted` if it is that
 * event's, `duplicate` if not. Events from before requests were named cannot.
 */
function receiptNaming(scope: OrgScope, e: PostbackEvent, receipt: DocumentSnapshot | undefined, booked: ConversionDoc): ReceiptWrite | undefined {
  if (e.intakeId === undefined) return undefined;
  const ref = receiptRef(scope, e);
  if (!receipt?.exists) return { ref, create: true, data: { at: e.occurredAt, via: e.via, clickId: e.clickId, named: withNamed(undefined, e.clickId, e.intakeId) } };
  if (namedRequest(receipt.get('named'), e.clickId) !== undefined) return undefined; // this request's (others are superseded)
  // Rejected for its click while another click holds the receipt: that one stands and keeps it (its event books over
  // this one), and this request is answered duplicate by the re-booking rules.
  if (rejectedForItsClick(booked)) return undefined;
  return { ref, create: false, lastUpdateTime: receipt.updateTime!, data: { clickId: e.clickId, named: withNamed(receipt.get('named'), e.clickId, e.intakeId) } };
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
  // The click id says so too: a postback handled before its click is not a way round this check.
  if (a.click?.isBot || parts.bot) a.fraudReasons.push('bot_click');
  // Includes a conversion reported up to 5 minutes "before" its click (clock skew, tolerated above): it is at
  // least as fast.
  if (sinceClick < minClickToConversionMs && !a.reasons.includes('before_click')) a.fraudReasons.push('click_to_conversion_too_fast');
  return a;
}

/**
 * The conversion, priced, with its commission as pending unless rejected. `usage` is the campaign's cap usage
 * (read in the caller's transaction) when it caps conversions: a conversion past a cap is rejected. `shardKey`:
 * the first event id of the commit it is written in, so that a commit adds to one shard of each counter
 * (counters.ts).
 */
function book(scope: OrgScope, e: PostbackEvent, a: Attribution, shardKey: string, usage?: Usage, previous?: ConversionDoc): Booking {
  // The currency of the amount as sent: another than the campaign's is rejected (currency_mismatch) but kept as
  // it was. Without either there is no amount (the intake keeps none), and revenue and payout are 0.
  const currency = e.currency ?? a.campaign?.currency ?? 'USD';
  const override = a.affiliate?.payoutOverrides?.[a.campaignId ?? ''];
  const priced = a.reasons.length === 0 && a.campaign ? payoutFor(override ?? a.campaign.payout, e.amount) : 0;
  const reasons = usage && a.reasons.length === 0 ? capsBroken(a.campaign?.caps, usage, priced) : a.reasons;
  const rejected = reasons.length > 0;
  const payout = rejected ? 0 : priced;
  const revenue = rejected || !a.campaign ? 0 : revenueFor(a.campaign.revenue, e.amount);
  const approvableAt = new Date(Date.parse(e.occurredAt) + (a.campaign?.holdDays ?? 0) * day).toISOString();
  const status = rejected ? 'rejected' : 'pending';
  const booking: Booking = {
    ref: scope.collection('conversions').doc(e.eventId),
    ...(previous ? { replaces: true } : {}),
    conversion: {
      id: e.eventId, clickId: e.clickId, linkId: a.linkId, campaignId: a.campaignId, affiliateId: a.affiliateId,
      txnId: e.txnId, event: e.event, amount: e.amount, currency, revenue, payout,
      status, reasons: [...reasons, ...a.fraudReasons], fraudHold: a.fraudReasons.length > 0,
      // Set by the commissions job while the affiliate is not active (commissions-job.ts); its sweep asks for false.
      affiliateHeld: false,
      // Its first analytics version (conversion-analytics.ts); a booking over an earlier rejection is a new
      // version, under an event id of its own, and recorded after the version it replaces even when its postback
      // was received first (a pixel and a postback of one sale, sent together): the report counts the latest.
      analytics: { eventId: previous ? deterministicId('cnv', e.eventId, 'click', e.clickId) : e.eventId, status, revenue, payout, recordedAt: previous ? recordedAfter(previous, e.occurredAt) : e.occurredAt } satisfies AnalyticsVersion,
      via: e.via, createdAt: e.occurredAt, approvableAt: rejected ? null : approvableAt, updatedAt: e.occurredAt,
      // The request whose event this is: the intake answers a repeat of the click by it (conversion-intake.ts).
      ...(e.intakeId !== undefined ? { intakeId: e.intakeId } : {}),
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
  const c = counterRef(scope, e.occurredAt, a.campaignId, a.affiliateId, shardKey);
  booking.counter = { ...c, currency, revenue, payout };
  if (usage) {
    const windows = capUsageRefs(scope, e, a);
    // What it counted where, so that a later rejection or reversal can give the room back (conversion-lifecycle.ts).
    booking.conversion.capUsageIds = windows.map((w) => w.ref.id);
    booking.capUsage = windows.map(({ window, period, ref }) => ({
      ref,
      payout,
      // Kept a while past its window for support questions, then removed by Firestore's TTL policy.
      base: { campaignId: a.campaignId, window, period, currency, expireAt: Timestamp.fromMillis(Date.parse(e.occurredAt) + (window === 'daily' ? 35 : 400) * day) },
    }));
  }
  return booking;
}

const commitConversions = groupedWrites(bookGroup, bookAlone, {
  maxItems: maxConversionsPerCommit,
  maxConcurrent: concurrentCommits,
  // The same delivery, not just the same conversion: a pixel and a postback of one sale (one conversion id) may
  // name different click ids, and each must be booked on its own terms (shared/domain/rebooking.ts), not be
  // handed the other's outcome; two requests naming the same click are told apart by their intake ids (only
  // the one the receipt names is booked).
  keyOf: (e: PostbackEvent) => `${e.orgId}/${e.eventId}/${e.clickId}/${e.intakeId ?? ''}`,
});

/**
 * Attributes a postback and books the conversion with its commission as pending. Returns the conversion
 * event for analytics; on redelivery, the already booked conversion (so analytics still gets it once); null
 * when another request's event books it (superseded).
 */
export async function applyPostback(e: PostbackEvent): Promise<ConversionEvent | null> {
  const doc = await commitConversions(e);
  return doc ? conversionEventOf(e.orgId, doc) : null;
}

/**
 * One postback in a transaction of its own: the careful path, for a group that could not be committed whole.
 * It reads again what the group read, so that the conversion's existence is checked where it is written.
 */
async function bookAlone(e: PostbackEvent): Promise<ConversionDoc | null> {
  return (await firestore().runTransaction((tx) => bookTogether(tx, [e])))[0]!;
}

/**
 * Postbacks of one organisation booked in one transaction, in order: the path for campaigns with caps, whose
 * usage must be read where it is written. Each conversion is checked against the usage the ones before it
 * left, and each usage document is written once, however many of them it counts: it is the one document every
 * conversion of a busy capped campaign writes, and Firestore sustains about one write a second on a document.
 */
async function bookTogether(tx: Transaction, events: PostbackEvent[]): Promise<(ConversionDoc | null)[]> {
  const scope = OrgScope.system(events[0]!.orgId, 'state-writer');
  const links = events.map(linkOf);
  const first = await readAll(tx, events.map((e, i) => [scope.collection('conversions').doc(e.eventId), links[i]?.ref, receiptRef(scope, e)]));
  const final = events.map((e, i) => isFinal(first.get(i, 0)!, e, first.get(i, 1)));
  const skipped = events.map((e, i) => !final[i] && superseded(first.get(i, 2), e));
  const detailed = events.map((e, i) => (final[i] || skipped[i] ? undefined : detailRefs(scope, e, first.get(i, 1))));
  const second = await readAll(tx, detailed.map((refs) => refs ?? []));
  const attributions = events.map((e, i) =>
    final[i] || skipped[i] ? undefined : attribute(scope, e, links[i]?.parts, first.get(i, 1), detailed[i]?.map((_, j) => second.get(i, j)!)),
  );
  const windows = events.map((e, i) => (attributions[i] && needsCapCheck(attributions[i]) ? capUsageRefs(scope, e, attributions[i]) : []));
  const usageSnaps = await readAll(tx, windows.map((ws) => ws.map((w) => w.ref)));
  const used = new Map<string, CapUsage>();
  windows.forEach((ws, i) => ws.forEach((w, k) => {
    const snap = usageSnaps.get(i, k)!;
    used.set(w.ref.path, used.get(w.ref.path) ?? { conversions: Number(snap.get('conversions') ?? 0), payout: Number(snap.get('payout') ?? 0) });
  }));

  const writes = new BookingWrites();
  const docs = events.map((e, i) => {
    if (skipped[i]) return null;
    const a = attributions[i];
    if (!a) return first.get(i, 0)!.data()!;
    const usage = windows[i]!.length ? (Object.fromEntries(windows[i]!.map((w) => [w.window, { ...used.get(w.ref.path)! }])) as Usage) : undefined;
    const b = book(scope, e, a, events[0]!.eventId, usage, first.get(i, 0)!.exists ? first.get(i, 0)!.data() : undefined);
    b.receipt = receiptNaming(scope, e, first.get(i, 2), b.conversion);
    for (const u of b.capUsage ?? []) {
      const now = used.get(u.ref.path)!;
      used.set(u.ref.path, { conversions: now.conversions + 1, payout: now.payout + u.payout });
    }
    writes.add(b);
    return b.conversion;
  });
  writes.writeTo(tx);
  return docs;
}

/**
 * What a set of bookings writes: each conversion and commission created, and each counter and usage
 * document written once with the sum of what its bookings add.
 */
class BookingWrites {
  private readonly creates: { ref: DocumentReference; data: DocumentData }[] = [];
  /** Conversions booked again over a rejection (isFinal): only ever inside the transaction that read them. */
  private readonly replaces: { ref: DocumentReference; data: DocumentData }[] = [];
  /** Receipts naming a request for one more click: only if unchanged since read (a batch has no other guard). */
  private readonly updates: { ref: DocumentReference; data: DocumentData; lastUpdateTime: Timestamp }[] = [];
  private readonly counters = new Map<string, { ref: DocumentReference; base: Record<string, string>; parts: NonNullable<Booking['counter']>[] }>();
  private readonly usage = new Map<string, { ref: DocumentReference; base: DocumentData; conversions: number; payout: number }>();

  add(b: Booking): void {
    if (b.replaces) this.replaces.push({ ref: b.ref, data: b.conversion });
    else this.creates.push({ ref: b.ref, data: b.conversion });
    if (b.commission) this.creates.push(b.commission);
    if (b.receipt?.create) this.creates.push(b.receipt);
    else if (b.receipt) this.updates.push(b.receipt);
    if (b.counter) {
      const path = b.counter.ref.path;
      const c = this.counters.get(path) ?? this.counters.set(path, { ref: b.counter.ref, base: b.counter.base, parts: [] }).get(path)!;
      c.parts.push(b.counter);
    }
    for (const u of b.capUsage ?? []) {
      const sum = this.usage.get(u.ref.path) ?? this.usage.set(u.ref.path, { ref: u.ref, base: u.base, conversions: 0, payout: 0 }).get(u.ref.path)!;
      sum.conversions += 1;
      sum.payout += u.payout;
    }
  }

  get size(): number {
    return this.creates.length + this.replaces.length;
  }

  writeTo(w: {
    create(ref: DocumentReference, data: DocumentData): unknown;
    set(ref: DocumentReference, data: DocumentData, options?: { merge: true }): unknown;
    update(ref: DocumentReference, data: DocumentData, precondition: { lastUpdateTime: Timestamp }): unknown;
  }): void {
    for (const c of this.creates) w.create(c.ref, c.data);
    for (const c of this.replaces) w.set(c.ref, c.data);
    for (const u of this.updates) w.update(u.ref, u.data, { lastUpdateTime: u.lastUpdateTime });
    for (const c of this.counters.values()) w.set(c.ref, counterFields(c.base, c.parts), { merge: true });
    for (const u of this.usage.values()) w.set(u.ref, { ...u.base, conversions: FieldValue.increment(u.conversions), payout: FieldValue.increment(u.payout) }, { merge: true });
  }
}

/**
 * Two reads and one atomic commit for the whole group; throws (and writes nothing) on any conflict. An item
 * that cannot be prepared (an id Firestore refuses, a campaign whose payout rule does not price) is rejected
 * on its own and left out of the batch.
 */
async function bookGroup(events: PostbackEvent[]): Promise<Settled<ConversionDoc | null>[]> {
  const db = firestore();
  const results: (Settled<ConversionDoc | null> | undefined)[] = new Array(events.length);
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
  const plans = events.map((e, i) => attempt(i, () => ({ conversion: scopeOf(e.orgId).collection('conversions').doc(e.eventId), link: linkOf(e), receipt: receiptRef(scopeOf(e.orgId), e) })));
  const firstRead = await readAll(db, plans.map((p) => (p ? [p.conversion, p.link?.ref, p.receipt] : [])));
  const detailed = events.map((e, i) => {
    const existing = firstRead.get(i, 0);
    return existing && !existing.exists && !superseded(firstRead.get(i, 2), e) ? attempt(i, () => detailRefs(scopeOf(e.orgId), e, firstRead.get(i, 1))) : undefined;
  });
  const secondRead = await readAll(db, detailed.map((refs) => refs ?? []));

  // No two items of a group are the same delivery (groupedWrites hands a repeat the first one's outcome), but two
  // may be the same conversion under different click ids (a pixel and a postback of one sale): the first is
  // booked with the group, each later one after it, alone, reading what the first wrote, so that the re-booking
  // rule decides between them as if they had come one after the other.
  const conversionPaths = new Set<string>();
  const later: number[] = [];
  /** One after the other (they may be the same conversion), each with its own outcome. */
  const eachAlone = async (indexes: number[]) => {
    for (const i of indexes) {
      try {
        results[i] = { status: 'fulfilled', value: await bookAlone(events[i]!) };
      } catch (reason) {
        results[i] = { status: 'rejected', reason };
      }
    }
  };
  const writes = new BookingWrites();
  /** Conversions of campaigns with caps, by campaign: booked after the batch, in transactions (bookTogether). */
  const cappedByCampaign = new Map<string, number[]>();
  const rebooking: number[] = [];
  events.forEach((e, i) => {
    if (results[i]) return; // could not be prepared
    const path = plans[i]!.conversion.path;
    if (conversionPaths.has(path)) {
      later.push(i);
      return;
    }
    conversionPaths.add(path);
    const existing = firstRead.get(i, 0)!;
    if (isFinal(existing, e, firstRead.get(i, 1))) {
      results[i] = { status: 'fulfilled', value: existing.data()! };
      return;
    }
    if (superseded(firstRead.get(i, 2), e)) {
      results[i] = { status: 'fulfilled', value: null };
      return;
    }
    if (existing.exists) {
      // Booked again over a rejection for its click id: in a transaction, where what it replaces is read.
      rebooking.push(i);
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
    const b = attempt(i, () => book(scope, e, a, events[0]!.eventId));
    if (!b) return;
    b.receipt = receiptNaming(scope, e, firstRead.get(i, 2), b.conversion);
    writes.add(b);
    results[i] = { status: 'fulfilled', value: b.conversion };
  });
  if (writes.size) {
    const batch = db.batch();
    writes.writeTo(batch);
    await batch.commit();
  }
  // One campaign's conversions in one transaction (they count against the same usage documents, and would only
  // wait on each other's transactions); different campaigns at once. Should that transaction fail, each of its
  // conversions is booked on its own, so that one bad postback fails only its own delivery.
  await Promise.all(
    [...cappedByCampaign.values(), ...rebooking.map((i) => [i])].map(async (chain) => {
      for (let k = 0; k < chain.length; k += maxCappedPerTransaction) {
        const part = chain.slice(k, k + maxCappedPerTransaction);
        try {
          const docs = await db.runTransaction((tx) => bookTogether(tx, part.map((i) => events[i]!)));
          part.forEach((i, j) => (results[i] = { status: 'fulfilled', value: docs[j]! }));
        } catch {
          await eachAlone(part);
        }
      }
    }),
  );
  await eachAlone(later);
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
async function readAll(source: { getAll(...refs: DocumentReference[]): Promise<DocumentSnapshot[]> }, perItem: (DocumentReference | undefined)[][]) {
  const unique = new Map<string, DocumentReference>();
  for (const refs of perItem) for (const ref of refs) if (ref) unique.set(ref.path, ref);
  const snaps = unique.size ? await source.getAll(...unique.values()) : [];
  const byPath = new Map(snaps.map((s) => [s.ref.path, s]));
  return { get: (item: number, k: number) => { const ref = perItem[item]![k]; return ref && byPath.get(ref.path); } };
}
