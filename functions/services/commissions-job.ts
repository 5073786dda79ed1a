import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { publishDueConversionAnalytics } from './conversion-analytics';
import { applyTransition } from './conversion-lifecycle';
import { OrgScope } from './tenancy';

/**
 * Approves pending conversions whose hold period has ended and that carry no fraud hold, across all
 * organisations. Conversions of one affiliate on one campaign are approved one after another (they share a
 * volume-tier counter); different ones in parallel. A conversion of an affiliate that is not `active` (paused,
 * blocked) stays pending, neither approved nor rejected, and is approved by the first sweep after it is active again.
 */
const pageSize = 500;
const parallelGroups = 16;

export interface CommissionsJobResult {
  approved: number;
  skipped: number;
  failed: number;
  /** Conversion versions sent to analytics (publishDueConversionAnalytics), and those left due for the next run. */
  analyticsPublished: number;
  analyticsFailed: number;
}

export async function approveDueConversions(now = new Date()): Promise<CommissionsJobResult> {
  const db = firestore();
  let approved = 0;
  let skipped = 0;
  let failed = 0;
  const analytics = { published: 0, failed: 0 };
  // The approvals' analytics versions, with any an earlier transition could not send: after every page, so a
  // run cut short by its timeout has still sent what it approved (the next run starts with approving again).
  const sendDue = async () => {
    const sent = await publishDueConversionAnalytics(now);
    analytics.published += sent.published;
    analytics.failed = sent.failed;
  };
  // A paused or blocked affiliate's due conversions stay pending, first in every sweep's order: read the affiliate
  // once a run, outside any transaction, and pass over its groups, instead of a transaction per conversion (a large
  // affiliate paused for a month would otherwise take the whole run's time from every other organisation's approvals).
  // An affiliate found active is still checked in each approval's transaction.
  const inactive = new Map<string, Promise<boolean>>();
  const heldBack = (d: FirebaseFirestore.QueryDocumentSnapshot): Promise<boolean> => {
    const orgId = d.ref.parent.parent!.id;
    const affiliateId = d.get('affiliateId') as string;
    const key = `${orgId}/${affiliateId}`;
    let held = inactive.get(key);
    if (!held) {
      const scope = OrgScope.system(orgId, 'commissions-job');
      held = scope.collection('affiliates').doc(affiliateId).get().then((a) => a.exists && a.get('status') !== 'active', () => false);
      inactive.set(key, held);
    }
    return held;
  };
  let last: FirebaseFirestore.QueryDocumentSnapshot | undefined;
  for (;;) {
    let q = db.collectionGroup(collections.conversions)
      .where('status', '==', 'pending').where('fraudHold', '==', false).where('approvableAt', '<=', now.toISOString())
      .orderBy('approvableAt').limit(pageSize);
    if (last) q = q.startAfter(last);
    const page = await q.get();
    if (page.empty) break;
    last = page.docs[page.docs.length - 1];
    const groups = new Map<string, FirebaseFirestore.QueryDocumentSnapshot[]>();
    for (const d of page.docs) {
      const key = `${d.ref.parent.parent!.id}/${d.get('campaignId')}/${d.get('affiliateId')}`;
      groups.set(key, [...(groups.get(key) ?? []), d]);
    }
    const queue = [...groups.values()];
    const worker = async () => {
      for (let group = queue.shift(); group; group = queue.shift()) {
        if (await heldBack(group[0]!)) {
          skipped += group.length;
          continue;
        }
        for (const d of group) {
          const scope = OrgScope.system(d.ref.parent.parent!.id, 'commissions-job');
          try {
            // The affiliate is read in the approval's transaction: one blocked meanwhile makes it retry, and see it.
            const moved = await scope.transact(async (tx, audit) => {
              const affiliate = await tx.get(scope.collection('affiliates').doc(d.get('affiliateId') as string));
              if (affiliate.exists && affiliate.get('status') !== 'active') return false;
              await applyTransition(tx, scope, d.id, { status: 'approved', reason: 'hold period ended' }, now, audit);
              return true;
            });
            if (moved) approved++;
            else skipped++;
          } catch (err) {
            // Moved meanwhile (approved or rejected by hand): that is the claim-only-pending rule at work.
            if ((err as { code?: string }).code === 'conflict') skipped++;
            else {
              // One bad conversion must not stop the sweep; it stays pending and the next sweep retries it.
              failed++;
              console.error(JSON.stringify({ severity: 'ERROR', message: 'approval failed', conversion: d.ref.path, error: String(err) }));
            }
          }
        }
      }
    };
    await Promise.all(Array.from({ length: parallelGroups }, worker));
    await sendDue();
    if (page.size < pageSize) break;
  }
  if (last === undefined) await sendDue(); // nothing to approve: still send what earlier transitions left due
  return { approved, skipped, failed, analyticsPublished: analytics.published, analyticsFailed: analytics.failed };
}
