import type * as functions from '@google-cloud/functions-framework';

/** First-party cookie on the tracking domain carrying the click id, for the pixel. */
export const clickCookie = 'abp_cid';

export function header(req: functions.Request, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export function textError(res: functions.Response, status: number, message: string): void {
  res.status(status).type('text/plain').send(message);
}

/**
 * Country from a header set by our own edge only: Cloudflare's CF-IPCountry, or the client-region header
 * the external load balancer adds (infra/ configures it as X-Client-Region: {client_region}).
 */
export function edgeCountry(req: functions.Request): string | null {
  const v = (header(req, 'cf-ipcountry') ?? header(req, 'x-client-region'))?.trim().toUpperCase();
  return v && /^[A-Z]{2}$/.test(v) && v !== 'XX' ? v : null;
}
