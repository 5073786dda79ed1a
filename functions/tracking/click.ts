import * as functions from '@google-cloud/functions-framework';
import { z } from 'zod';
import { config } from '../../shared/config';
import { mintClickId } from '../../shared/domain/click-id';
import type { ClickEvent } from '../../shared/domain/events';
import { fillMacros } from '../../shared/domain/macros';
import { classifyUserAgent } from '../../shared/domain/user-agent';
import { clientIp, ipPrefix, keyedHash } from '../../shared/domain/visitor';
import { functionNames } from '../../shared/names';
import { secrets } from '../adapters/local-secrets';
import { sendTrackingEvent } from '../adapters/pubsub';
import { clickCapReachedNow } from '../services/click-caps';
import { resolveLinkNow, type ResolvedLink } from '../services/link-resolver';
import { edgeCountry, header, redirectTo, setClickCookie, textError } from './http';
import { answerFrameworkErrors } from '../framework-errors';

// A key sent twice (`?sub1=a&sub1=b`, an ad network appending its own) counts its first value, as the postback does.
const subId = z.preprocess((v) => (Array.isArray(v) ? v[0] : v), z.string().max(255, 'must be at most 255 characters').optional());
/** The click's query string: sub ids only; anything else the affiliate appends is ignored. */
export const clickQuery = z.object({ sub1: subId, sub2: subId, sub3: subId, sub4: subId, sub5: subId });

/** HEAD requests and link previews fetch the URL without a person behind them. */
function previewReason(req: functions.Request): string | null {
  if (req.method === 'HEAD') return 'head_request';
  const purpose = `${header(req, 'purpose') ?? ''} ${header(req, 'x-purpose') ?? ''}`.toLowerCase();
  if (purpose.includes('preview')) return 'link_preview';
  return null;
}

/**
 * A browser fetching the link ahead of a click that may come (speculation rules, `<link rel=prefetch>`, prerender:
 * `Sec-Purpose: prefetch`, or the older `Purpose: prefetch`). Were it answered, the browser would follow the
 * prefetched redirect when the visitor clicks, and the visit would reach us only as that prefetch: a bot click.
 * Declined, the browser drops it and the click, if it comes, is a request of its own.
 */
function isSpeculative(req: functions.Request): boolean {
  const purpose = header(req, 'sec-purpose') ?? header(req, 'purpose');
  return purpose !== undefined && purpose.toLowerCase().includes('prefetch');
}

type Subs = { [K in keyof z.infer<typeof clickQuery>]-?: string | null };

/**
 * GET|HEAD /c/{linkId}: records the click and redirects at once. The only I/O it waits for is the publish (a
 * Cloud Function's CPU is throttled once it has answered); the link comes from an in-memory cache.
 *
 * Written with callbacks, not async/await: the Functions Framework runs every request in a `domain`, under
 * which each promise costs about a microsecond of async hooks plus a destroy hook for the collector, and the
 * click path is measured per request against a bare redirect. A warm instance serves a click without
 * creating a promise of its own; only a link cache miss goes through one.
 */
export function handleClick(req: functions.Request, res: functions.Response): void {
  res.setHeader('Cache-Control', 'no-store');
  if (req.method !== 'GET' && req.method !== 'HEAD') return textError(res, 405, 'Use GET');
  // A link id as newLinkId makes them: anything else is unknown without a lookup.
  const linkId = /^\/c\/([0-9a-hjkmnp-tv-z]{12})\/?$/.exec(req.path)?.[1];
  if (!linkId) return textError(res, 404, 'Unknown link');
  if (isSpeculative(req)) return textError(res, 503, 'Prefetch declined: the click is recorded when the visitor follows the link');

  const query = clickQuery.safeParse(req.query);
  if (!query.success) return textError(res, 400, query.error.issues.map((i) => `${i.path.join('.')} ${i.message}`).join('; '));
  const q = query.data;
  // An empty sub id (`?sub1=`, a template with nothing to fill) is none, as in the postback.
  const subs: Subs = { sub1: q.sub1 || null, sub2: q.sub2 || null, sub3: q.sub3 || null, sub4: q.sub4 || null, sub5: q.sub5 || null };

  const link = resolveLinkNow(linkId);
  if (link instanceof Promise) {
    link.then((l) => answerClick(req, res, linkId, subs, l)).catch((err: unknown) => failClick(res, err));
    return;
  }
  answerClick(req, res, linkId, subs, link);
}

function answerClick(req: functions.Request, res: functions.Response, linkId: string, subs: Subs, link: ResolvedLink | undefined): void {
  if (!link) return textError(res, 404, 'Unknown link');
  const { campaign } = link;
  const ua = header(req, 'user-agent');
  const visitor = classifyUserAgent(ua);
  const country = edgeCountry(req);
  const botReason = previewReason(req) ?? (visitor.isBot ? 'bot_user_agent' : null);
  // Bots, previews and HEAD requests get the advertiser's redirect whatever the targeting and caps (a crawler's
  // device is never in a device list): they are recorded as bot clicks, which no cap counts.
  const offTarget =
    botReason === null &&
    ((campaign.targeting.countries?.length && (!country || !campaign.targeting.countries.includes(country))) ||
      (campaign.targeting.devices?.length && !campaign.targeting.devices.includes(visitor.device as 'desktop')));
  const now = Date.now();
  const capped = campaign.status === 'active' && !offTarget && botReason === null && campaign.clickCaps !== undefined && clickCapReachedNow(link, now);
  if (campaign.status !== 'active' || offTarget || capped) {
    // Not billable and not the advertiser's offer: send the visitor to the organisation's fallback, if any.
    if (link.fallbackUrl) return redirectTo(res, link.fallbackUrl);
    const why = campaign.status !== 'active' ? 'This offer is not available' : offTarget ? 'This offer is not available in your region or on your device' : 'This offer has had all the visits it takes for now';
    return textError(res, 404, why);
  }

  const keys = secrets();
  const clickId = mintClickId(keys.clickSigningKey, linkId, now, botReason !== null);
  const c = config();
  const ip = clientIp(header(req, 'x-forwarded-for'), c.XFF_TRUSTED_HOPS, req.socket.remoteAddress);
  const event: ClickEvent = {
    type: 'click',
    eventId: clickId,
    orgId: link.orgId,
    linkId,
    campaignId: campaign.id,
    affiliateId: link.affiliateId,
    occurredAt: new Date(now).toISOString(),
    ...subs,
    visitorHash: keyedHash(keys.hashKey, 'visitor', ip, ua),
    ipHash: keyedHash(keys.hashKey, 'ip', ip),
    ipPrefix: ipPrefix(ip),
    country,
    device: visitor.device,
    os: visitor.os,
    browser: visitor.browser,
    referrer: header(req, 'referer')?.slice(0, 1024) ?? null,
    isBot: botReason !== null,
    botReason,
    attributionWindowDays: campaign.attributionWindowDays,
  };
  sendTrackingEvent(event, (published) => {
    if (published.status === 'rejected') return failClick(res, published.reason);
    try {
      const location = fillMacros(campaign.destinationUrl, { click_id: clickId, affiliate_id: link.affiliateId, campaign_id: campaign.id, ...subs });
      // Not a bot's: its click id, flagged as a bot's, would replace the visitor's own click for the pixel.
      if (botReason === null) setClickCookie(res, link.orgId, clickId, campaign.attributionWindowDays * 86_400, c.publicBaseUrl.startsWith('https:'));
      redirectTo(res, location);
    } catch (err) {
      failClick(res, err);
    }
  });
}

/** The click could not be recorded: the visitor is told to retry rather than sent on untracked. */
function failClick(res: functions.Response, err: unknown): void {
  console.error(JSON.stringify({ severity: 'ERROR', message: 'click failed', error: String((err as Error)?.stack ?? err) }));
  if (!res.headersSent) textError(res, 503, 'Temporarily unavailable, please retry');
}

answerFrameworkErrors();
functions.http(functionNames.click, (req, res) => {
  try {
    handleClick(req, res);
  } catch (err) {
    failClick(res, err);
  }
});
