import * as functions from '@google-cloud/functions-framework';
import { functionNames } from '../../shared/names';
import { approveDueConversions } from '../services/commissions-job';

/** Called by Cloud Scheduler (OIDC-authenticated; the function is not public) every 15 minutes. */
functions.http(functionNames.commissionsJob, async (_req, res) => {
  try {
    res.json(await approveDueConversions());
  } catch (err) {
    console.error(JSON.stringify({ severity: 'ERROR', message: 'commissions job failed', error: String((err as Error)?.stack ?? err) }));
    res.status(500).json({ error: { code: 'internal', message: 'commissions job failed; the scheduler retries', details: [] } });
  }
});
