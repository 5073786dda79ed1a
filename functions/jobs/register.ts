import * as functions from '@google-cloud/functions-framework';
import { answerFrameworkErrors } from '../framework-errors';

/**
 * A scheduled job as an HTTP function: Cloud Scheduler calls it with an OIDC token (the function is not
 * public). A failure answers 500 so the scheduler retries; every job is safe to run twice.
 */
export function registerJob(name: string, run: () => Promise<unknown>): void {
  answerFrameworkErrors();
  functions.http(name, async (_req, res) => {
    try {
      res.json(await run());
    } catch (err) {
      console.error(JSON.stringify({ severity: 'ERROR', message: `${name} failed`, error: String((err as Error)?.stack ?? err) }));
      res.status(500).json({ error: { code: 'internal', message: `${name} failed; the scheduler retries`, details: [] } });
    }
  });
}
