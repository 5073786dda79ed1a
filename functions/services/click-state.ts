import { FieldValue, Timestamp, type DocumentReference, type DocumentSnapshot, type WriteBatch } from '@google-cloud/firestore';
import type { ClickEvent } from '../../shared/domain/events';
import { firestore } from '../adapters/firestore';
import { deadLetterRetentionDays } from '../../shared/names';
import { counterRef } from './counters';
import type { Settled } from '../../shared/group-commit';
import { groupedWrites, isConflict } from './grouped-writes';
import { OrgScope } from './tenancy';

/**
 * The state worker's clicks: the click document, the visitor's recent clicks on the link (for uniqueness) and
 * the live counters, written exactly once per click id however often Pub/Sub delivers it.
 *
 * Clicks are the volume of the pipeline, so concurrent deliveries are written as one atomic batch instead
 * of one transaction each: read every click and visitor document of the group in one call, then commit one
 * batch that creates the clicks (create fails if a click already exists, and the whole batch with it, so no
 * counter is ever incremented twice) and changes each visitor's recent clicks only if that document is still
 * the one that was read (an update precondition, or create when there was none). If anything in the group
 * changed between the read and the commit (a redelivery running elsewhere, the same visitor clicking on
 * another instance), the batch fails as a whole; it is read and tried once more, then each click on its
 * own, which then sees what changed (grouped-writes.ts). Measured on the emulator: see
 * scripts/bench/tracking.ts, part 3.
 */
const hour = 3_600_000;
const day = 86_400_000;
/**
 * Click documents outlive the attribution window by this margin before Firestore's TTL removes them, and outlive
 * the dead letters' retention in any case: a click's document is what makes a replayed dead letter (docs/deploy.md
 * says to republish them to the topic, which feeds both workers) a repeat, not a second click in the live counters.
 */
const clickRetentionMarginDays = 7;
const clickRetentionMinDays = deadLetterRetentionDays + 2;
/** For clicks published before events carried their window; the campaign schema's default. */
const defaultAttributionWindowDays = 30;
/** A click takes at most three writes (click, visitor, counter); a Firestore commit takes at most 500. */
const maxClicksPerCommit = 150;
/** Groups in flight at once: enough to overlap round trips, few enough that groups grow under load. */
const concurrentCommits = 4;
/** A click whose documents keep changing under it is retried this often before its delivery fails. */
const maxSingleAttempts = 5;
/** The longest pause after a click's first conflict, growing with each attempt (jittered). */
const conflictBackoffMs = 25;

export interface ClickApplied {
  created: boolean;
}

/** The visitor document a click changes, as a key: its organisation, link and visitor. */
const visitorKeyOf = (e: ClickEvent) => `${e.orgId}/${e.linkId}_${e.visitorHash}`;

const commitClicks = groupedWrites(
  async (events: ClickEvent[]) => (await writeOnce(events)).map((value): Settled<ClickApplied> => ({ status: 'fulfilled', value })),
  applyAlone,
  {
    maxItems: maxClicksPerCommit, maxConcurrent: concurrentCommits, keyOf: (e) => `${e.orgId}/${e.eventId}`,
    // The visitor document, written with a precondition: one commit at a time may hold it (a flood of one
    // visitor's clicks failed most of its deliveries on each other's writes before).
    exclusiveKeyOf: (e) => (e.isBot ? undefined : visitorKeyOf(e)),
  },
);

/** Resolves once the click is in Firestore (or was already there: `created: false`). */
export function applyClick(e: ClickEvent): Promise<ClickApplied> {
  return commitClicks(e);
}

async function applyAlone(e: ClickEvent): Promise<ClickApplied> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await writeOnce([e]))[0]!;
    } catch (err) {
      if (!isConflict(err) || attempt >= maxSingleAttempts) throw err;
      // What conflicts here is another instance writing the same visitor (this one writes each visitor from one
      // commit at a time): retried at once, the same instances would meet again.
      await new Promise((resolve) => setTimeout(resolve, Math.random() * conflictBackoffMs * attempt));
    }
  }
}

/** A visitor's recent click on a link, as the visitor document keeps it. */
interface RecentClick {
  t: number;
  /** The click id; absent on documents written before the visitor kept its recent clicks. */
  id?: string;
  unique: boolean;
}

interface VisitorState {
  ref: DocumentReference;
  read: DocumentSnapshot;
  /** In time order; clicks of this group are added as they are decided. */
  recent: RecentClick[];
  /** The time of the newest click no longer kept in `recent` (every one dropped is at or before it). */
  droppedUpTo: number | undefined;
  moved: boolean;
}

/**
 * How late a click may arrive behind the visitor's newest one (a redelivery after an outage, a dead letter
 * replayed) and still find the clicks an hour either side of it. At most `recentLimit` are kept, so a visitor
 * hash many people share (one office, one browser build) cannot grow the document without bound.
 */
const lateness = 3 * hour;
/** A click `lateness` behind the newest needs the click up to an hour before it: kept that much longer. */
const recentSpan = lateness + hour;
const recentLimit = 100;

function recentOf(read: DocumentSnapshot): RecentClick[] {
  if (!read.exists) return [];
  const kept = read.get('recent') as RecentClick[] | undefined;
  if (kept) return [...kept];
  // Written before recent clicks were kept: its last click, which it flagged however it did.
  const last = read.get('lastClickAt') as number | undefined;
  return last === undefined ? [] : [{ t: last, unique: false }];
}

interface CounterDelta {
  ref: DocumentReference;
  base: Record<string, string>;
  clicks: number;
  uniqueClicks: number;
  botClicks: number;
}

/** One read and one atomic commit for the whole group; throws (and writes nothing) on any conflict. */
async function writeOnce(events: ClickEvent[]): Promise<ClickApplied[]> {
  const db = firestore();
  const scopes = new Map<string, OrgScope>();
  const scopeOf = (orgId: string) => scopes.get(orgId) ?? scopes.set(orgId, OrgScope.system(orgId, 'state-writer')).get(orgId)!;
  const clickRefOf = (e: ClickEvent) => scopeOf(e.orgId).collection('clicks').doc(e.eventId);

  const clickRefs = new Map<string, DocumentReference>();
  const visitorRefs = new Map<string, DocumentReference>();
  for (const e of events) {
    clickRefs.set(`${e.orgId}/${e.eventId}`, clickRefOf(e));
    if (!e.isBot) visitorRefs.set(visitorKeyOf(e), scopeOf(e.orgId).collection('visitors').doc(`${e.linkId}_${e.visitorHash}`));
  }
  const refs = [...clickRefs.values(), ...visitorRefs.values()];
  const snaps = await db.getAll(...refs);
  const existing = new Set(snaps.slice(0, clickRefs.size).filter((s) => s.exists).map((s) => s.ref.path));
  const visitors = new Map<string, VisitorState>();
  [...visitorRefs.keys()].forEach((key, i) => {
    const read = snaps[clickRefs.size + i]!;
    visitors.set(key, { ref: read.ref, read, recent: recentOf(read), droppedUpTo: read.get('droppedUpTo') as number | undefined, moved: false });
  });
  const windowDays = await attributionWindows(events.filter((e) => e.attributionWindowDays === undefined), scopeOf);

  const batch = db.batch();
  const counters = new Map<string, CounterDelta>();
  /** The counter a click of `e`'s link counts in: its day, and the shard of this commit. */
  const shardKey = events[0]!.eventId;
  const deltaOf = (e: ClickEvent, occurredAt: string) => {
    const c = counterRef(scopeOf(e.orgId), occurredAt, e.campaignId, e.affiliateId, shardKey);
    return counters.get(c.ref.path) ?? counters.set(c.ref.path, { ...c, clicks: 0, uniqueClicks: 0, botClicks: 0 }).get(c.ref.path)!;
  };
  const results = new Map<ClickEvent, ClickApplied>();
  // In click order, so that within the group the earlier of two clicks by one visitor is the unique one. (No
  // two events of a group are the same click: groupedWrites hands a repeat delivery the first one's outcome.)
  const ordered = events.map((e, i) => ({ e, i, t: Date.parse(e.occurredAt) })).sort((a, b) => a.t - b.t || a.i - b.i);
  for (const { e, t } of ordered) {
    const clickRef = clickRefOf(e);
    if (existing.has(clickRef.path)) {
      results.set(e, { created: false });
      continue;
    }
    const visitor = e.isBot ? undefined : visitors.get(visitorKeyOf(e));
    // Repeat clicks by the same visitor on the same link within an hour (inclusive, as the report counts them)
    // are recorded but not unique. "Within an hour" of the click before it in time, not of the last one
    // processed: Pub/Sub may deliver an earlier click later.
    const at = visitor ? visitor.recent.findIndex((r) => r.t > t) : -1;
    const before = visitor?.recent[(at === -1 ? visitor.recent.length : at) - 1];
    const after = at === -1 ? undefined : visitor?.recent[at];
    // The click before it may have been dropped from `recent` (past its span or its limit): when the newest one
    // dropped is earlier than this click, it is that click before it. A click older than even that (delivered
    // after more than 100 later ones) cannot tell, and counts as unique.
    const dropped = visitor?.droppedUpTo !== undefined && visitor.droppedUpTo <= t ? visitor.droppedUpTo : undefined;
    const previous = Math.max(before?.t ?? -Infinity, dropped ?? -Infinity);
    const unique = !e.isBot && t - previous > hour;
    const window = e.attributionWindowDays ?? windowDays.get(`${e.orgId}/${e.campaignId}`) ?? defaultAttributionWindowDays;
    batch.create(clickRef, {
      id: e.eventId, linkId: e.linkId, campaignId: e.campaignId, affiliateId: e.affiliateId, createdAt: e.occurredAt,
      sub1: e.sub1, sub2: e.sub2, sub3: e.sub3, sub4: e.sub4, sub5: e.sub5,
      country: e.country, device: e.device, os: e.os, browser: e.browser, referrer: e.referrer,
      ipPrefix: e.ipPrefix, ipHash: e.ipHash, visitorHash: e.visitorHash, isBot: e.isBot, botReason: e.botReason, unique,
      expireAt: Timestamp.fromMillis(t + Math.max(window + clickRetentionMarginDays, clickRetentionMinDays) * day),
    });
    if (visitor) {
      // A late click an hour or less before a unique one makes that one a repeat: its flag and its count follow.
      if (after?.unique && after.id && after.t - t <= hour) {
        after.unique = false;
        const afterAt = new Date(after.t).toISOString();
        batch.update(scopeOf(e.orgId).collection('clicks').doc(after.id), { unique: false });
        deltaOf(e, afterAt).uniqueClicks -= 1;
      }
      visitor.recent.splice(at === -1 ? visitor.recent.length : at, 0, { t, id: e.eventId, unique });
      visitor.moved = true;
    }
    const delta = deltaOf(e, e.occurredAt);
    delta.clicks += e.isBot ? 0 : 1;
    delta.uniqueClicks += unique ? 1 : 0;
    delta.botClicks += e.isBot ? 1 : 0;
    results.set(e, { created: true });
  }
  if (!counters.size) return events.map((e) => results.get(e)!);

  for (const v of visitors.values()) if (v.moved) moveVisitor(batch, v);
  for (const d of counters.values()) {
    batch.set(d.ref, {
      ...d.base,
      clicks: FieldValue.increment(d.clicks),
      uniqueClicks: FieldValue.increment(d.uniqueClicks),
      botClicks: FieldValue.increment(d.botClicks),
    }, { merge: true });
  }
  await batch.commit();
  return events.map((e) => results.get(e)!);
}

/**
 * The visitor's recent clicks change only if nobody changed them since we read them. Kept as long as a dead letter
 * may be replayed (as click documents are): a click replayed days later still finds the visitor's clicks before it.
 */
function moveVisitor(batch: WriteBatch, v: VisitorState): void {
  const last = v.recent[v.recent.length - 1]!.t;
  const recent = v.recent.filter((r) => r.t >= last - recentSpan).slice(-recentLimit);
  const newestDropped = v.recent.length > recent.length ? v.recent[v.recent.length - recent.length - 1]!.t : undefined;
  const droppedUpTo = Math.max(v.droppedUpTo ?? -Infinity, newestDropped ?? -Infinity);
  const data = {
    lastClickAt: last, recent, expireAt: Timestamp.fromMillis(last + (deadLetterRetentionDays + 1) * day),
    ...(Number.isFinite(droppedUpTo) ? { droppedUpTo } : {}),
  };
  if (v.read.exists) batch.update(v.ref, data, { lastUpdateTime: v.read.updateTime! });
  else batch.create(v.ref, data);
}

/** Attribution windows of the campaigns of clicks that did not carry theirs (published by an older version). */
async function attributionWindows(events: ClickEvent[], scopeOf: (orgId: string) => OrgScope): Promise<Map<string, number>> {
  const keys = [...new Set(events.map((e) => `${e.orgId}/${e.campaignId}`))];
  if (!keys.length) return new Map();
  const snaps = await firestore().getAll(...keys.map((k) => {
    const [orgId, campaignId] = k.split('/') as [string, string];
    return scopeOf(orgId).collection('campaigns').doc(campaignId);
  }));
  return new Map(keys.flatMap((k, i) => {
    const days = snaps[i]!.get('attributionWindowDays') as number | undefined;
    return days === undefined ? [] : [[k, days] as [string, number]];
  }));
}
