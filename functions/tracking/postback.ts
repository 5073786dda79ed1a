import * as functions from '@google-cloud/functions-framework';
import { ApiError, badRequest } from '../../shared/errors';
import { functionNames } from '../../shared/names';
import { sendError } from '../api/router';
import { acceptConversion } from './conversion-intake';
import { answerFrameworkErrors } from '../framework-errors';

/**
 * The body's fields: a form or a JSON object. Any other body is refused when the query string does not carry the
 * postback by itself: the framework reads text (text/plain) and raw bytes without parsing them, so their fields
 * would be missing and the answer would blame the token or the click id that were sent. A postback whose query has
 * both keeps being accepted whatever its body.
 */
function postbackBody(req: functions.Request): Record<string, unknown> {
  // No body (a GET, or a POST with everything in the query, which many clients send with Content-Length: 0 or an
  // empty chunked body).
  const rawBody = (req as { rawBody?: Buffer }).rawBody;
  if ((req.headers['transfer-encoding'] === undefined && !(Number(req.headers['content-length']) > 0)) || rawBody?.length === 0) return {};
  const readable = Boolean(req.is(['application/x-www-form-urlencoded', 'application/json']));
  const fields = readable && !Array.isArray(req.body) && req.body !== null && typeof req.body === 'object';
  if (fields) return req.body as Record<string, unknown>;
  if (req.query.token !== undefined && req.query.click_id !== undefined) return {};
  if (!readable) {
    throw new ApiError('unsupported_media_type', `A postback body must be a form (application/x-www-form-urlencoded) or JSON (application/json), not ${req.get('content-type') ?? 'a body without a Content-Type'}; or send every field in the query string`);
  }
  throw badRequest('The postback is invalid', [{ field: 'body', message: 'must be a JSON object of the postback fields ({"token": …, "click_id": …}), not an array or a single value' }]);
}

/** GET|POST /postback: the advertiser's server reports a conversion (query string, form or JSON body). */
export async function handlePostback(req: functions.Request, res: functions.Response): Promise<void> {
  res.setHeader('Cache-Control', 'no-store');
  try {
    if (req.method !== 'GET' && req.method !== 'POST') {
      res.status(405).json({ error: { code: 'method_not_allowed', message: 'Use GET or POST', details: [] } });
      return;
    }
    const body = postbackBody(req);
    const result = await acceptConversion({ ...(req.query as Record<string, unknown>), ...body }, 'postback');
    res.status(200).json(result);
  } catch (err) {
    sendError(res, err);
  }
}

answerFrameworkErrors();
functions.http(functionNames.postback, handlePostback);
