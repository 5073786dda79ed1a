import { FieldValue } from '@google-cloud/firestore';
import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { publishDueConversionAnalytics } from './conversion-analytics';
import { applyTransition } from './conversion-lifecycle';
import { globalIndex, globalIndexDoc, OrgScope } from './tenancy';

/**
 * Approves pending conversions whose hold period has ended and that carry no fraud hold, across all
 * organisations. Conversions of one affiliate on one campaign are approved one after another (they share a
 * volume-tier counter); different ones in parallel. A conversion of an affiliate that is not `active` (paused,
 * blocked) stays pending, neither approved nor rejected, and is approved by the first sweep after it is active again.
 *
 * Such conversions are set aside (`affiliateHeld`), so that the sweep's query no longer returns them: they are
 * due first in every sweep's order, and an affiliate paused for a month would otherwise be read again, page by
 * page, every run. The affiliate is remembered in `heldAffiliates`; each run first sets its conversions back
 * once it is active again (releaseReactivated).
 */
const pageSize = 500;
const parallelGroups = 16;

export interface CommissionsJobResult {
  approved: number;
  skipped: number;
  failed: number;
  /** Conversions set aside this run because their affiliate is not active, and set back because it is again. */
  held: number;
  released: number;
  /** Conversion versions sent to analytics (publishDueConversionAnalytics), and those left due for the next run. */
  analyticsPublished: number;
  analyticsFailed: number;
}

const heldAffiliateRef = (orgId: string, affiliateId: string) => globalIndexDoc(collections.heldAffiliates, `${orgId}_${affiliateId}`);

/**
 * Sets aside a group of conversions (one affiliate's) while their affiliate is not active, in a transaction that
 * reads the affiliate: one made active meanwhile has its conversions left for approval. The marker's `holds`
 * changes with every hold, which is how a release running at the same time knows to leave the marker be.
 */
async function holdBack(group: FirebaseFirestore.QueryDocumentSnapshot[], now: Date): Promise<number> {
  const orgId = group[0]!.ref.parent.parent!.id;
  const affiliateId = group[0]!.get('affiliateId') as string;
  const scope = OrgScope.system(orgId, 'commissions-job');
  return scope.transact(async (tx) => {
    const affiliate = await tx.get(scope.collection('affiliates').doc(affiliateId));
    if (!affiliate.exists || affiliate.get('status') === 'active') return 0;
    for (const d of group) tx.update(d.ref, { affiliateHeld: true });
    tx.set(heldAffiliateRef(orgId, affiliateId), { orgId, affiliateId, heldAt: now.toISOString(), holds: FieldValue.increment(1) }, { merge: true });
    return group.length;
  });
}

/**
 * Sets back the conversions of every held affiliate that is active again (or gone), then forgets the affiliate:
 * only if no hold came in since the marker was read (a run still working from an older reading of the affiliate),
 * else the marker stays and the next run sets back what that hold set aside.
 */
async function releaseReactivated(): Promise<number> {
  let released = 0;
  const markers = await globalIndex(collections.heldAffiliates).get();
  for (const marker of markers.docs) {
    try {
      released += await release(marker);
    } catch (err) {
      // One affiliate's release failing must not stop every organisation's approvals: its marker stays for the next run.
      console.error(JSON.stringify({ severity: 'ERROR', message: 'release of held conversions failed', marker: marker.id, error: String(err) }));
    }
  }
  return released;
}

/** One held affiliate's conversions set back, if it is active again; answers how many. */
async function release(marker: FirebaseFirestore.QueryDocumentSnapshot): Promise<number> {
  const { orgId, affiliateId } = marker.data() as { orgId: string; affiliateId: string };
  const scope = OrgScope.system(orgId, 'commissions-job');
  const affiliate = await scope.collection('affiliates').doc(affiliateId).get();
  if (affiliate.exists && affiliate.get('status') !== 'active') return 0;
  let released = 0;
  for (;;) {
    const held = await scope.collection('conversions')
      .where('affiliateId', '==', affiliateId).where('affiliateHeld', '==', true).where('status', '==', 'pending')
      .limit(pageSize).get();
    if (held.empty) break;
    const batch = firestore().batch();
    for (const d of held.docs) batch.update(d.ref, { affiliateHeld: false });
    await batch.commit();
    released += held.size;
  }
  await marker.ref.delete({ lastUpdateTime: marker.updateTime }).catch((err: { code?: number }) => {
    if (err.code !== 9) throw err; // FAILED_PRECONDITION: held again meanwhile; the next run sets that back
  });
  return released;
}

export async function approveDueConversions(now = new Date()): Promise<CommissionsJobResult> {
  const db = firestore();
  let approved = 0;
  let skipped = 0;
  let failed = 0;
  let held = 0;
  const analytics = { published: 0, failed: 0 };
  // The approvals' analytics versions, with any an earlier transition could not send: after every page, so a
  // run cut short by its timeout has still sent what it approved (the next run starts with approving again).
  const sendDue = async () => {
    const sent = await publishDueConversionAnalytics(now);
    analytics.published += sent.published;
    analytics.failed = sent.failed;
  };
  // First, so that an affiliate made active again since the last run has its conversions approved in this one.
  const released = await releaseReactivated();
  // The affiliate read once a run, outside any transaction, to find the groups to set aside; one found active is
  // still checked in each approval's transaction.
  const inactive = new Map<string, Promise<boolean>>();
  const heldBack = (d: FirebaseFirestore.QueryDocumentSnapshot): Promise<boolean> => {
    const orgId = d.ref.parent.parent!.id;
    const affiliateId = d.get('affiliateId') as string;
    const key = `${orgId}/${affiliateId}`;
    let known = inactive.get(key);
    if (!known) {
      const scope = OrgScope.system(orgId, 'commissions-job');
      known = scope.collection('affiliates').doc(affiliateId).get().then((a) => a.exists && a.get('status') !== 'active', () => false);
      inactive.set(key, known);
    }
    return known;
  };
  let last: FirebaseFirestore.QueryDocumentSnapshot | undefined;
  for (;;) {
    let q = db.collectionGroup(collections.conversions)
      .where('status', '==', 'pending').where('fraudHold', '==', false).where('affiliateHeld', '==', false)
      .where('approvableAt', '<=', now.toISOString())
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
          try {
            const setAside = await holdBack(group, now);
            held += setAside;
            skipped += group.length - setAside;
          } catch (err) {
            // Left as it was: the next run reads it again and tries once more.
            skipped += group.length;
            console.error(JSON.stringify({ severity: 'ERROR', message: 'setting aside failed', conversions: group.length, first: group[0]!.ref.path, error: String(err) }));
          }
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
  return { approved, skipped, failed, held, released, analyticsPublished: analytics.published, analyticsFailed: analytics.failed };
}
