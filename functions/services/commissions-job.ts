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
