import * as functions from '@google-cloud/functions-framework';
import { ApiError } from '../../shared/errors';
import { functionNames, localPaths } from '../../shared/names';
import { clickCookieName } from './http';
import { acceptConversion } from './conversion-intake';
import { answerFrameworkErrors } from '../framework-errors';

// The classic transparent 1×1 GIF.
const gif = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64');

function cookie(req: functions.Request, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return decodeURIComponent(v.join('='));
  }
  return undefined;
}

/**
 * GET /pixel: the browser-side conversion. It always answers the GIF, never an error page, because it is
 * embedded in the advertiser's checkout; the outcome is in the X-ABP-Conversion header for debugging.
 */
export async function handlePixel(req: functions.Request, res: functions.Response): Promise<void> {
  let outcome: string;
  try {
    // An advertiser's template sends `click_id=` empty exactly when it has none: then the cookie of the pixel
    // token's organisation speaks.
    const r = await acceptConversion(req.query as Record<string, unknown>, 'pixel', (orgId) => cookie(req, clickCookieName(orgId)));
    outcome = `${r.status}; id=${r.conversionId}`;
  } catch (err) {
    const details = err instanceof ApiError && err.details.length ? `: ${err.details.map((d) => `${d.field} ${d.message}`).join('; ')}` : '';
    // A header carries printable ASCII only (the messages have '…', a detail may quote the visitor's input).
    outcome = `ignored; ${String((err as Error)?.message ?? err)}${details}`.replaceAll('…', '...').replace(/[^\x20-\x7e]/g, '?').slice(0, 240);
  }
  res.status(200).set({ 'Content-Type': 'image/gif', 'Cache-Control': 'no-store, private', 'X-ABP-Conversion': outcome }).send(gif);
}

// The pixel reads only its query string and cookie: a body the framework could not parse does not stop it.
answerFrameworkErrors({ functionName: functionNames.pixel, localPath: localPaths.pixel, answer: (req, res) => void handlePixel(req, res) });
functions.http(functionNames.pixel, handlePixel);
