import * as functions from '@google-cloud/functions-framework';
import { functionNames } from '../../shared/names';
import { runDueScheduledPayouts } from '../services/payouts-job';

/** Called by Cloud Scheduler (OIDC-authenticated) hourly: runs each organisation's payout run on its day. */
functions.http(functionNames.payoutsJob, async (_req, res) => {
  try {
    res.json(await runDueScheduledPayouts());
  } catch (err) {
    console.error(JSON.stringify({ severity: 'ERROR', message: 'payouts job failed', error: String((err as Error)?.stack ?? err) }));
    res.status(500).json({ error: { code: 'internal', message: 'payouts job failed; the scheduler retries', details: [] } });
  }
});
