import { FirestoreBackupSchedule } from '@cdktf/provider-google/lib/firestore-backup-schedule';
import { FirestoreDatabase } from '@cdktf/provider-google/lib/firestore-database';
import { FirestoreField } from '@cdktf/provider-google/lib/firestore-field';
import { FirestoreIndex } from '@cdktf/provider-google/lib/firestore-index';
import type { Construct } from 'constructs';
import { collections } from '../shared/names';
import type { StackContext } from './stack';

type Collection = (typeof collections)[keyof typeof collections];
type Order = 'ASCENDING' | 'DESCENDING';

export interface CompositeIndex {
  collection: Collection;
  scope: 'COLLECTION' | 'COLLECTION_GROUP';
  fields: [string, Order][];
  /** The query that needs it. */
  query: string;
}

/**
 * OrgScope.list (functions/services/tenancy.ts) pages newest first with orderBy(field, desc).orderBy(__name__):
 * the document-id tiebreak runs ASCENDING against a DESCENDING field, which Firestore's automatic single-field
 * indexes cannot serve, so even the unfiltered listing needs (field DESC, __name__ ASC). Filters combine by index
 * merging: an index per equality field, all sharing the (createdAt DESC, __name__ ASC) suffix, serves any
 * combination of those filters (and the affiliate role's `affiliateId in [...]` narrowing).
 *
 * Equality-only queries ordered by __name__ ASC (campaigns/affiliates/links/auditLog lists, ledger by payoutId
 * or conversionId, payouts by status) are served by the automatic single-field indexes and need nothing here.
 */
const newest: [string, Order][] = [['createdAt', 'DESCENDING'], ['__name__', 'ASCENDING']];

export const compositeIndexes: CompositeIndex[] = [
  // GET /v1/orgs/:orgId/conversions (functions/api/routes/tracking.ts): scope.list('conversions', newestFirstBy: 'createdAt'),
  // optional status / campaignId / affiliateId equality and createdAt range (from/to).
  { collection: collections.conversions, scope: 'COLLECTION', fields: newest, query: 'conversions list, no filter (and from/to range only)' },
  { collection: collections.conversions, scope: 'COLLECTION', fields: [['status', 'ASCENDING'], ...newest], query: 'conversions list ?status=' },
  { collection: collections.conversions, scope: 'COLLECTION', fields: [['campaignId', 'ASCENDING'], ...newest], query: 'conversions list ?campaignId=' },
  { collection: collections.conversions, scope: 'COLLECTION', fields: [['affiliateId', 'ASCENDING'], ...newest], query: 'conversions list ?affiliateId= (and the affiliate role narrowing)' },
  // functions/services/commissions-job.ts: collectionGroup('conversions').where(status == pending).where(fraudHold == false)
  // .where(affiliateHeld == false).where(approvableAt <= now).orderBy(approvableAt): across all organisations.
  {
    collection: collections.conversions, scope: 'COLLECTION_GROUP',
    fields: [['status', 'ASCENDING'], ['fraudHold', 'ASCENDING'], ['affiliateHeld', 'ASCENDING'], ['approvableAt', 'ASCENDING']],
    query: 'commissions job: due pending conversions of every organisation',
  },
  // functions/services/conversion-analytics.ts publishDueConversionAnalytics: collectionGroup('conversions')
  // .where(analyticsDue == true).where(updatedAt <=).orderBy(updatedAt), across all organisations.
  {
    collection: collections.conversions, scope: 'COLLECTION_GROUP',
    fields: [['analyticsDue', 'ASCENDING'], ['updatedAt', 'ASCENDING']],
    query: 'commissions job: conversion analytics versions not yet sent',
  },
  // GET /v1/orgs/:orgId/affiliates/:id/ledger (functions/api/routes/money.ts): where(affiliateId ==), newest first.
  { collection: collections.ledger, scope: 'COLLECTION', fields: [['affiliateId', 'ASCENDING'], ...newest], query: "an affiliate's ledger, newest first" },
  // GET /v1/orgs/:orgId/affiliates/:id/balance (functions/services/balances.ts): the affiliate's currencies, one
  // at a time in order, then sum(amount) per currency and status; Firestore sums from the index, so amount is in it.
  { collection: collections.ledger, scope: 'COLLECTION', fields: [['affiliateId', 'ASCENDING'], ['currency', 'ASCENDING']], query: "balance: an affiliate's currencies" },
  {
    collection: collections.ledger, scope: 'COLLECTION',
    fields: [['affiliateId', 'ASCENDING'], ['currency', 'ASCENDING'], ['status', 'ASCENDING'], ['amount', 'ASCENDING']],
    query: 'balance: sum(amount), affiliateId ==, currency ==, status ==',
  },
  // The other ledger queries are equality-only (payout runs: status ==, or payoutId == with status ==; the Stripe
  // webhook: payoutId ==) and need nothing here. (The approval sweep runs on
  // conversions, above, not on the ledger.)
  // GET /v1/orgs/:orgId/stats (functions/api/routes/tracking.ts): day range plus optional campaignId / affiliateId
  // equality (the affiliate role adds affiliateId in [...]). One index per combination rather than index merging
  // under a range filter.
  { collection: collections.counters, scope: 'COLLECTION', fields: [['affiliateId', 'ASCENDING'], ['day', 'ASCENDING']], query: 'stats ?affiliateId= (and the affiliate role narrowing), day range' },
  { collection: collections.counters, scope: 'COLLECTION', fields: [['campaignId', 'ASCENDING'], ['day', 'ASCENDING']], query: 'stats ?campaignId=, day range' },
  {
    collection: collections.counters, scope: 'COLLECTION',
    fields: [['campaignId', 'ASCENDING'], ['affiliateId', 'ASCENDING'], ['day', 'ASCENDING']],
    query: 'stats ?campaignId= with ?affiliateId= or the affiliate role narrowing, day range',
  },
  // Click caps (functions/services/click-caps.ts): sum(clicks) where campaignId == and a day range; Firestore sums
  // from the index, so the summed field is in it.
  { collection: collections.counters, scope: 'COLLECTION', fields: [['campaignId', 'ASCENDING'], ['day', 'ASCENDING'], ['clicks', 'ASCENDING']], query: 'click caps: sum(clicks), campaignId ==, day range' },
  // GET /v1/orgs/:orgId/payout-runs (money.ts): scope.list('payoutRuns', newestFirstBy: 'createdAt').
  { collection: collections.payoutRuns, scope: 'COLLECTION', fields: newest, query: 'payout runs, newest first' },
  // GET /v1/orgs/:orgId/payouts (money.ts): newest first, optional affiliateId / status equality.
  { collection: collections.payouts, scope: 'COLLECTION', fields: newest, query: 'payouts, newest first' },
  { collection: collections.payouts, scope: 'COLLECTION', fields: [['affiliateId', 'ASCENDING'], ...newest], query: 'payouts ?affiliateId= (and the affiliate role narrowing)' },
  { collection: collections.payouts, scope: 'COLLECTION', fields: [['status', 'ASCENDING'], ...newest], query: 'payouts ?status=' },
  { collection: collections.payouts, scope: 'COLLECTION', fields: [['runId', 'ASCENDING'], ...newest], query: 'payouts ?runId=' },
];

/** A logical id from the index's definition, so adding an index never renames (and recreates) the others. */
export function indexId(index: CompositeIndex): string {
  const fields = index.fields.map(([f, o]) => `${f.replace(/_/g, '')}_${o === 'ASCENDING' ? 'asc' : 'desc'}`);
  return [index.scope === 'COLLECTION_GROUP' ? 'group_index' : 'index', index.collection, ...fields].join('_');
}

/** Collection groups whose documents Firestore deletes once `expireAt` has passed. */
export const ttlCollections: Collection[] = [collections.clicks, collections.visitors, collections.capUsage];
export const ttlField = 'expireAt';

/** How long the daily backups are kept (Firestore allows up to 14 weeks for any schedule). */
export const backupRetentionDays = 14;

/**
 * The (default) Firestore database in Native mode with point-in-time recovery and a daily backup, the TTL policies,
 * the members collection-group exemption and the composite indexes. If the project already has a (default) database,
 * import it instead of creating it: `terraform import google_firestore_database.firestore '(default)'`
 * (docs/deploy.md).
 */
export function firestoreDatabase(scope: Construct, c: StackContext): FirestoreDatabase {
  const db = new FirestoreDatabase(scope, 'firestore', {
    name: '(default)',
    locationId: c.config.ABP_FIRESTORE_LOCATION ?? c.region,
    type: 'FIRESTORE_NATIVE',
    deleteProtectionState: 'DELETE_PROTECTION_ENABLED',
    // `terraform destroy` leaves the data alone; deleting a production database is a deliberate, manual act.
    deletionPolicy: 'ABANDON',
    // The database holds the money ledger and payouts. A bad write (a bug, a mistaken script) can be read back as it
    // was at any minute of the last 7 days and restored from there; the daily backups reach further back, and survive
    // the database itself.
    pointInTimeRecoveryEnablement: 'POINT_IN_TIME_RECOVERY_ENABLED',
    dependsOn: [c.apis.firestore!],
  });
  new FirestoreBackupSchedule(scope, 'firestore_daily_backup', {
    database: db.name,
    retention: `${backupRetentionDays * 86_400}s`,
    dailyRecurrence: {},
  });

  for (const collection of ttlCollections) {
    new FirestoreField(scope, `ttl_${collection}`, {
      database: db.name,
      collection,
      field: ttlField,
      ttlConfig: {},
      // Not queried: no single-field indexes, which also avoids the hotspot Google warns of on TTL timestamps.
      indexConfig: {},
    });
  }

  // Firestore's automatic single-field indexes are collection-scoped only; a field queried across organisations
  // (collectionGroup) needs an override, which replaces the automatic indexes, so the collection ones stay listed.
  const queriedAcrossOrgs = (id: string, collection: string, field: string) =>
    new FirestoreField(scope, id, {
      database: db.name,
      collection,
      field,
      indexConfig: {
        indexes: [
          { queryScope: 'COLLECTION', order: 'ASCENDING' },
          { queryScope: 'COLLECTION', order: 'DESCENDING' },
          { queryScope: 'COLLECTION_GROUP', order: 'ASCENDING' },
        ],
      },
    });
  // The hourly payouts job (payouts-job.ts): collectionGroup('payouts').where('status', 'in', …), paged by document.
  queriedAcrossOrgs('payouts_status', collections.payouts, 'status');
  // The same job: reversals left to apply (reversalParked == true, restoringEntries == true), across organisations.
  queriedAcrossOrgs('payouts_reversal_parked', collections.payouts, 'reversalParked');
  queriedAcrossOrgs('payouts_restoring_entries', collections.payouts, 'restoringEntries');
  // listMyOrgs (tenancy.ts): collectionGroup('members').where('userId', '==', uid).
  queriedAcrossOrgs('members_user_id', collections.members, 'userId');

  for (const index of compositeIndexes) {
    new FirestoreIndex(scope, indexId(index), {
      database: db.name,
      collection: index.collection,
      queryScope: index.scope,
      fields: index.fields.map(([fieldPath, order]) => ({ fieldPath, order })),
    });
  }
  return db;
}
