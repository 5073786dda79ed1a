import { collections } from '../../shared/names';
import { config } from '../../shared/config';
import { clickCapsOf, type ClickCaps } from '../../shared/domain/caps';
import type { Campaign } from '../../shared/domain/schemas';
import { firestore } from '../adapters/firestore';
import { OrgScope } from './tenancy';

/**
 * What the click function needs to know about a link, cached in memory for LINK_CACHE_TTL_SECONDS so a
 * warm instance answers without touching Firestore. Concurrent misses for the same link share one lookup, and a
 * link past its TTL is refreshed in the background (see resolveLinkNow).
 */
export interface ResolvedLink {
  linkId: string;
  orgId: string;
  affiliateId: string;
  campaign: Pick<Campaign, 'id' | 'status' | 'destinationUrl' | 'targeting' | 'attributionWindowDays' | 'currency'> & { clickCaps?: ClickCaps };
  fallbackUrl: string | null;
}

/** A lookup, and once it succeeded its answer, so that a warm instance can answer without a promise. */
interface CacheEntry {
  at: number;
  value: Promise<ResolvedLink | undefined>;
  resolved?: { link: ResolvedLink | undefined };
  /** A background lookup replacing this entry is under way. */
  refreshing?: boolean;
}
const cache = new Map<string, CacheEntry>();
/**
 * When a link id was found not to exist: kept apart from the links, so that a flood of made-up ids (each one lookup,
 * once per TTL) cannot push the links people click out of the cache.
 */
const unknown = new Map<string, number>();

async function load(linkId: string): Promise<ResolvedLink | undefined> {
  const db = firestore();
  const link = await db.doc(`${collections.linkIndex}/${linkId}`).get();
  if (!link.exists) return undefined;
  const { orgId, campaignId, affiliateId } = link.data() as { orgId: string; campaignId: string; affiliateId: string };
  // The link index is global (a click names only its link); what it points to is read through the owner's scope.
  const scope = OrgScope.system(orgId, 'click');
  const [campaign, org] = await db.getAll(scope.collection('campaigns').doc(campaignId), scope.orgRef);
  if (!campaign?.exists || !org?.exists) return undefined;
  const c = campaign.data() as Campaign;
  return {
    linkId,
    orgId,
    affiliateId,
    campaign: { id: c.id, status: c.status, destinationUrl: c.destinationUrl, targeting: c.targeting ?? {}, attributionWindowDays: c.attributionWindowDays, currency: c.currency, clickCaps: clickCapsOf(c.caps) },
    fallbackUrl: (org.get('fallbackUrl') as string | null) ?? null,
  };
}

/**
 * The link from the cache when it is there and fresh, without a promise (the click path's common case: see
 * groupCommitCallbacks for what a promise costs inside the Functions Framework); otherwise the lookup.
 */
export function resolveLinkNow(linkId: string): ResolvedLink | undefined | Promise<ResolvedLink | undefined> {
  const ttl = config().LINK_CACHE_TTL_SECONDS * 1000;
  const now = Date.now();
  const hit = cache.get(linkId);
  if (hit && now - hit.at < ttl) return hit.resolved ? hit.resolved.link : hit.value;
  if (!hit) {
    const missing = unknown.get(linkId);
    if (missing !== undefined && now - missing < ttl) return undefined;
  }
  // Past its TTL, a link already looked up is still answered from memory, for at most one more TTL, while one lookup
  // refreshes it: otherwise every click on a busy link waits for Firestore each time the entry expires, and at a
  // steady rate they pile up behind that lookup. A change to the link's campaign still shows within the TTL plus one
  // lookup.
  if (hit?.resolved && now - hit.at < 2 * ttl) {
    if (!hit.refreshing) refresh(linkId, hit);
    return hit.resolved.link;
  }
  const value = load(linkId);
  if (ttl > 0) {
    // Room is made once the link is known to exist: a lookup in flight holds a place only until it answers.
    const entry: CacheEntry = { at: now, value };
    cache.delete(linkId); // re-inserted, so that the map's order is the order links were last looked up in
    cache.set(linkId, entry);
    value.then(
      (link) => {
        if (cache.get(linkId) !== entry) return;
        const maxEntries = config().LINK_CACHE_MAX_ENTRIES;
        if (link) {
          entry.resolved = { link };
          // The least recently looked up first (a link clicked past its TTL moves to the end when refreshed).
          while (cache.size > maxEntries) cache.delete(cache.keys().next().value!);
        } else {
          cache.delete(linkId);
          if (unknown.size >= Math.ceil(maxEntries / 10)) unknown.clear();
          unknown.set(linkId, now);
        }
      },
      // A failed lookup must not be cached.
      () => cache.get(linkId) === entry && cache.delete(linkId),
    );
  }
  return value;
}

function refresh(linkId: string, stale: CacheEntry): void {
  stale.refreshing = true;
  load(linkId).then(
    (link) => {
      // Unless a newer entry took its place meanwhile.
      if (cache.get(linkId) === stale) {
        cache.delete(linkId);
        cache.set(linkId, { at: Date.now(), value: Promise.resolve(link), resolved: { link } });
      }
    },
    // A failed refresh leaves the entry as it was: the next click past the TTL tries again.
    () => (stale.refreshing = false),
  );
}

export function resolveLink(linkId: string): Promise<ResolvedLink | undefined> {
  return Promise.resolve(resolveLinkNow(linkId));
}
