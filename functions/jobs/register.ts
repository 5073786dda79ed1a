import * as functions from '@google-cloud/functions-framework';
import { answerFrameworkErrors } from '../framework-errors';

/**
 * A scheduled job as an HTTP function: Cloud Scheduler calls it with an OIDC token (the function is not
 * public). A failure answers 500 so the scheduler retries; every job is safe to run twice.
 */
export function registerJob(name: string, run: () => Promise<unknown>): void {
  answerFrameworkErrors();
  functions.http(name, async (req, res) => {
    // A GET that runs payouts (a browser's prefetch, a crawler) would be a surprise: the scheduler POSTs.
    if (req.method !== 'POST') {
      res.status(405).set('Allow', 'POST').json({ error: { code: 'method_not_allowed', message: `${name} runs on POST`, details: [] } });
      return;
    }
    try {
      res.json(await run());
    } catch (err) {
      console.error(JSON.stringify({ severity: 'ERROR', message: `${name} failed`, error: String((err as Error)?.stack ?? err) }));
      res.status(500).json({ error: { code: 'internal', message: `${name} failed; the scheduler retries`, details: [] } });
    }
  });
}
