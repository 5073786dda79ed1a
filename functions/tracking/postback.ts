import * as functions from '@google-cloud/functions-framework';
import { functionNames } from '../../shared/names';
import { sendError } from '../api/router';
import { acceptConversion } from './conversion-intake';
import { answerFrameworkErrors } from '../framework-errors';

/** GET|POST /postback: the advertiser's server reports a conversion (query string, form or JSON body). */
export async function handlePostback(req: functions.Request, res: functions.Response): Promise<void> {
  res.setHeader('Cache-Control', 'no-store');
  try {
    if (req.method !== 'GET' && req.method !== 'POST') {
      res.status(405).json({ error: { code: 'method_not_allowed', message: 'Use GET or POST', details: [] } });
      return;
    }
    const body = req.body && typeof req.body === 'object' && !Buffer.isBuffer(req.body) ? (req.body as Record<string, unknown>) : {};
    const result = await acceptConversion({ ...(req.query as Record<string, unknown>), ...body }, 'postback');
    res.status(200).json(result);
  } catch (err) {
    sendError(res, err);
  }
}

answerFrameworkErrors();
functions.http(functionNames.postback, handlePostback);
