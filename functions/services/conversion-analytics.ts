import { FieldValue, type DocumentData, type DocumentSnapshot } from '@google-cloud/firestore';
import type { ConversionEvent } from '../../shared/domain/events';
import { deterministicId } from '../../shared/ids';
import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { publishTrackingEvent } from '../adapters/pubsub';
import type { OrgScope } from './tenancy';

/**
 * A conversion's analytics rows. The report (shared/analytics/report.ts) counts each conversion as its latest
 * version says, so every change that moves the numbers (booked; approved, perhaps at a volume tier; rejected;
 * reversed) is one more row, under an event id of its own and the conversion's id. The conversion document
 * keeps its current version in `analytics`; a version not yet known to be published is marked `analyticsDue`
 * in the same transaction that made it, so a publish lost to a crash or an outage is sent again by the
 * commissions job's sweep (publishDueConversionAnalytics), which also sends the job's own approvals. Event
 * ids are deterministic: sending again adds nothing twice.
 */
export interface AnalyticsVersion {
  eventId: string;
  status: ConversionEvent['status'];
  revenue: number;
  payout: number;
  /** When this version was made; absent on conversions booked before versions existed. */
  recordedAt?: string;
}

/**
 * `at`, or just after the version `previous` stands at if that is not earlier: a new version must be the latest,
 * since the report takes the one recorded last (clocks of two instances, or a job stamping its whole run with its
 * start, could otherwise put a reversal before the approval it reverses).
 */
export function recordedAfter(previous: DocumentData, at: string): string {
  const before = Date.parse((previous.analytics as AnalyticsVersion | undefined)?.recordedAt ?? (previous.updatedAt as string | undefined) ?? '');
  return Number.isFinite(before) && before >= Date.parse(at) ? new Date(before + 1).toISOString() : at;
}

/** The version a transition makes: one per status a conversion reaches (it reaches each at most once). */
export function transitionVersion(conversionId: string, status: AnalyticsVersion['status'], revenue: number, payout: number, at: string): AnalyticsVersion {
  return { eventId: deterministicId('cnv', conversionId, 'status', status), status, revenue, payout, recordedAt: at };
}

/** The analytics event for a conversion document's current version. */
export function conversionEventOf(orgId: string, doc: DocumentData): ConversionEvent {
  // Conversions booked before `analytics` was kept are published as they are now.
  const v: AnalyticsVersion = (doc.analytics as AnalyticsVersion | undefined) ?? { eventId: doc.id as string, status: doc.status, revenue: doc.revenue, payout: doc.payout };
  return {
    type: 'conversion', eventId: v.eventId, orgId, clickId: doc.clickId, linkId: doc.linkId, campaignId: doc.campaignId, affiliateId: doc.affiliateId,
    txnId: doc.txnId, event: doc.event, amount: doc.amount, currency: doc.currency, revenue: v.revenue, payout: v.payout,
    status: v.status, reasons: doc.reasons, occurredAt: doc.createdAt, conversionId: doc.id, ...(v.recordedAt ? { recordedAt: v.recordedAt } : {}),
  };
}

/**
 * Publishes a transitioned conversion's current version, then clears its due mark (only if the version is
 * still the one published: a later transition keeps its own mark).
 */
export async function publishConversionVersion(scope: OrgScope, doc: DocumentData): Promise<void> {
  const event = conversionEventOf(scope.orgId, doc);
  await publishTrackingEvent(event);
  await clearDue(await scope.collection('conversions').doc(doc.id as string).get(), event.eventId);
}

/**
 * Marks a conversion's version due after its publish failed, so the sweep sends it even if every redelivery
 * of the message that booked it fails too (and it ends in the dead-letter topic). Only if that is still its
 * version: a later transition is due on its own.
 */
export async function markVersionDue(scope: OrgScope, conversionId: string, eventId: string): Promise<void> {
  await setDue(await scope.collection('conversions').doc(conversionId).get(), eventId, true);
}

/**
 * Clears a conversion's due mark once `eventId` is published, if that is still its version and the document
 * has not changed since `snap` was read (a newer version is due on its own). Should the clearing fail, the
 * mark stays and the next sweep sends the version again, which adds nothing.
 */
async function clearDue(snap: DocumentSnapshot, eventId: string): Promise<void> {
  await setDue(snap, eventId, false).catch(() => undefined);
}

/** Sets or clears the due mark of version `eventId`, only if it is still the conversion's and unchanged since `snap`. */
async function setDue(snap: DocumentSnapshot, eventId: string, due: boolean): Promise<void> {
  if (!snap.exists || (snap.get('analyticsDue') === true) === due || (snap.get('analytics') as AnalyticsVersion | undefined)?.eventId !== eventId) return;
  await snap.ref.update({ analyticsDue: due ? true : FieldValue.delete() }, { lastUpdateTime: snap.updateTime! });
}

/**
 * Sends every conversion version still marked due that was made at or before `upTo`, across all organisations
 * (the commissions job runs it after each page of its approvals). Returns how many it sent; one that fails stays due for
 * the next sweep.
 */
export async function publishDueConversionAnalytics(upTo: Date): Promise<{ published: number; failed: number }> {
  const cutoff = upTo.toISOString();
  let published = 0;
  let failed = 0;
  let last: FirebaseFirestore.QueryDocumentSnapshot | undefined;
  for (;;) {
    let q = firestore().collectionGroup(collections.conversions).where('analyticsDue', '==', true).where('updatedAt', '<=', cutoff).orderBy('updatedAt').limit(sweepPage);
    if (last) q = q.startAfter(last);
    const page = await q.get();
    if (page.empty) break;
    last = page.docs[page.docs.length - 1];
    await Promise.all(
      page.docs.map(async (d) => {
        const event = conversionEventOf(d.ref.parent.parent!.id, d.data());
        try {
          await publishTrackingEvent(event);
          published++;
        } catch (err) {
          failed++;
          console.error(JSON.stringify({ severity: 'ERROR', message: 'conversion analytics publish failed', conversion: d.ref.path, error: String(err) }));
          return;
        }
        await clearDue(d, event.eventId);
      }),
    );
    if (page.size < sweepPage) break;
  }
  return { published, failed };
}

const sweepPage = 200;
