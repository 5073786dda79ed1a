import { AggregateField } from '@google-cloud/firestore';
import { clickCapReached } from '../../shared/domain/caps';
import { config } from '../../shared/config';
import type { ResolvedLink } from './link-resolver';
import { OrgScope } from './tenancy';

/**
 * Click caps for the click function: whether a campaign has had its billable clicks for the UTC day or month.
 * Soft, as click caps are in ad tech: the count is the live counters' (what the state worker has booked,
 * seconds behind), read in the background at most once per LINK_CACHE_TTL_SECONDS per campaign (5 s after a
 * failed read), one read at a time, and never waited for, so a campaign with click caps costs the click path
 * nothing but a map lookup. A burst can therefore pass a cap by what arrives before the count catches up;
 * conversion and payout caps, which move money, hold at booking (ingest-state.ts).
 */
interface Usage {
  day: string;
  month: string;
  daily: number;
  monthly: number;
  at: number;
}
const usage = new Map<string, Usage>();
const refreshing = new Set<string>();
/** After a failed count, when to try again: a failing query must not be retried on every click. */
const retryAt = new Map<string, number>();
const retryAfterFailureMs = 5_000;
const maxEntries = 10_000;

async function count(orgId: string, campaignId: string, day: string, month: string): Promise<Pick<Usage, 'daily' | 'monthly'>> {
  const counters = OrgScope.system(orgId, 'click-caps').collection('counters').where('campaignId', '==', campaignId);
  const clicks = { clicks: AggregateField.sum('clicks') };
  const [daily, monthly] = await Promise.all([
    counters.where('day', '==', day).aggregate(clicks).get(),
    counters.where('day', '>=', `${month}-01`).where('day', '<=', `${month}-31`).aggregate(clicks).get(),
  ]);
  return { daily: daily.data().clicks ?? 0, monthly: monthly.data().clicks ?? 0 };
}

function refresh(key: string, link: ResolvedLink, day: string, month: string, now: number): void {
  if (refreshing.has(key)) return;
  refreshing.add(key);
  count(link.orgId, link.campaign.id, day, month)
    .then((used) => {
      if (!usage.has(key) && usage.size >= maxEntries) usage.delete(usage.keys().next().value!);
      usage.set(key, { day, month, ...used, at: now });
      retryAt.delete(key);
    })
    .catch((err: unknown) => {
      if (!retryAt.has(key) && retryAt.size >= maxEntries) retryAt.clear();
      retryAt.set(key, Date.now() + retryAfterFailureMs);
      console.error(JSON.stringify({ severity: 'WARNING', message: 'click caps: could not count clicks; the last count stands', campaignId: link.campaign.id, error: String(err) }));
    })
    .finally(() => refreshing.delete(key));
}

/** Whether the link's campaign has reached a click cap, by the last count (none yet: not reached). */
export function clickCapReachedNow(link: ResolvedLink, now: number): boolean {
  const caps = link.campaign.clickCaps;
  if (!caps) return false;
  const iso = new Date(now).toISOString();
  const day = iso.slice(0, 10);
  const month = iso.slice(0, 7);
  const key = `${link.orgId}/${link.campaign.id}`;
  const u = usage.get(key);
  const stale = !u || u.day !== day || now - u.at >= config().LINK_CACHE_TTL_SECONDS * 1000;
  if (stale && now >= (retryAt.get(key) ?? 0)) refresh(key, link, day, month, now);
  if (!u) return false;
  return clickCapReached(caps, { daily: u.day === day ? u.daily : 0, monthly: u.month === month ? u.monthly : 0 });
}
