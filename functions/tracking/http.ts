import type * as functions from '@google-cloud/functions-framework';

/**
 * First-party cookie on the tracking domain carrying the click id, for the pixel: one per organisation. Every
 * organisation's links share the tracking domain, so with one cookie for all a visitor's later click on another
 * organisation's link would replace the click the advertiser's pixel needs (its sale then rejected as a foreign click).
 */
export function clickCookieName(orgId: string): string {
  return `abp_cid_${orgId}`;
}

export function header(req: functions.Request, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export function textError(res: functions.Response, status: number, message: string): void {
  res.status(status).type('text/plain').send(message);
}

/** The Expires date changes once a second, and a busy click function formats it thousands of times a second. */
const expiries = new Map<number, { second: number; text: string }>();
function cookieExpiry(maxAgeSeconds: number): string {
  const second = Math.floor(Date.now() / 1000);
  let e = expiries.get(maxAgeSeconds);
  if (e?.second !== second) {
    // One entry per attribution window in use: campaigns have a handful of windows between them.
    if (!e && expiries.size >= 64) expiries.clear();
    e = { second, text: new Date((second + maxAgeSeconds) * 1000).toUTCString() };
    expiries.set(maxAgeSeconds, e);
  }
  return e.text;
}

/**
 * The click cookie, serialised here rather than by res.cookie (a measurable share of the click function's
 * CPU): the click id is URL-safe by construction, so no encoding is needed. Over HTTPS it is SameSite=None:
 * the pixel that reads it is an image on the advertiser's checkout, another site, and browsers send a Lax
 * cookie only on top-level navigations (None requires Secure; plain-HTTP local runs keep Lax).
 */
export function setClickCookie(res: Pick<functions.Response, 'setHeader'>, orgId: string, clickId: string, maxAgeSeconds: number, secure: boolean): void {
  const expires = cookieExpiry(maxAgeSeconds);
  res.setHeader('Set-Cookie', `${clickCookieName(orgId)}=${clickId}; Max-Age=${maxAgeSeconds}; Path=/; Expires=${expires}; HttpOnly; ${secure ? 'Secure; SameSite=None' : 'SameSite=Lax'}`);
}

/**
 * A bare 302: status, Location and an empty body. Express's res.redirect negotiates a content type and
 * renders an HTML note on every call, which no browser or crawler following a tracking link reads: work the
 * click path, measured per request against a bare redirect, can do without. A URL with anything a header
 * may not carry (spaces, non-ASCII) is re-serialised by the WHATWG parser, which percent-encodes it.
 */
export function redirectTo(res: functions.Response, url: string): void {
  res.statusCode = 302;
  // Most destinations are printable ASCII already (macro values are percent-encoded): skip the parse then.
  res.setHeader('Location', /^[\x21-\x7e]+$/.test(url) ? url : new URL(url).href);
  res.setHeader('Content-Length', '0');
  res.end();
}

/**
 * Country from a header set by our own edge only: Cloudflare's CF-IPCountry, or the client-region header
 * the external load balancer's URL map sets over any the client sent (infra/load-balancer.ts: X-Client-Region).
 */
export function edgeCountry(req: functions.Request): string | null {
  const v = (header(req, 'cf-ipcountry') ?? header(req, 'x-client-region'))?.trim().toUpperCase();
  return v && /^[A-Z]{2}$/.test(v) && v !== 'XX' ? v : null;
}
