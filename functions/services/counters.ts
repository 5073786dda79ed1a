import { createHash } from 'node:crypto';
import type { OrgScope } from './tenancy';

/**
 * The live counters dashboards read (GET stats): one document per organisation, day, campaign, affiliate
 * and shard. Sharded because one document takes about one sustained write per second in production.
 *
 * `shardKey` picks the shard. The state worker's commits of clicks and of conversions pass their group's first
 * event id, so that a commit writes each counter once and successive commits spread over the shards: a shard per
 * event put a busy link's group on every shard, each written by every commit, which is no sharding at all. Any
 * shard is right: an event is counted by the commit that creates its click or conversion, exactly once whichever
 * shard it lands on, and readers sum them all (a later rejection takes its part back on a shard of its own).
 */
const counterShards = 8;

function shardOf(shardKey: string): number {
  return createHash('sha1').update(shardKey).digest()[0]! % counterShards;
}

export function counterRef(scope: OrgScope, occurredAt: string, campaignId: string, affiliateId: string, shardKey: string) {
  const dayKey = occurredAt.slice(0, 10);
  return {
    ref: scope.collection('counters').doc(`${dayKey}_${campaignId}_${affiliateId}_${shardOf(shardKey)}`),
    base: { orgId: scope.orgId, day: dayKey, campaignId, affiliateId },
  };
}
