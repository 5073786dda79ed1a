import { createHash } from 'node:crypto';
import type { OrgScope } from './tenancy';

/**
 * The live counters dashboards read (GET stats): one document per organisation, day, campaign, affiliate
 * and shard. Sharded because one document takes about one sustained write per second in production;
 * the shard is a function of the event id, so a redelivery would land on the same document.
 */
const counterShards = 8;

function shardOf(eventId: string): number {
  return createHash('sha1').update(eventId).digest()[0]! % counterShards;
}

export function counterRef(scope: OrgScope, occurredAt: string, campaignId: string, affiliateId: string, eventId: string) {
  const dayKey = occurredAt.slice(0, 10);
  return {
    ref: scope.collection('counters').doc(`${dayKey}_${campaignId}_${affiliateId}_${shardOf(eventId)}`),
    base: { orgId: scope.orgId, day: dayKey, campaignId, affiliateId },
  };
}
