import { createHash } from 'node:crypto';
import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { runPayouts } from './payout-runs';
import { OrgScope } from './tenancy';

/**
 * Starts the scheduled payout run of every organisation whose schedule falls on today (UTC). The run id is
 * derived from the organisation and the date, so however often the scheduler fires that day, there is one run.
 */
export function isDue(schedule: { frequency: 'weekly' | 'monthly'; day: number }, now: Date): boolean {
  if (schedule.frequency === 'weekly') return ((now.getUTCDay() + 6) % 7) + 1 === schedule.day;
  return now.getUTCDate() === schedule.day;
}

export async function runDueScheduledPayouts(now = new Date()): Promise<{ orgs: number; runs: string[] }> {
  const orgs = await firestore().collection(collections.orgs).where('payoutSchedule.frequency', 'in', ['weekly', 'monthly']).get();
  const runs: string[] = [];
  const failures: { orgId: string; error: unknown }[] = [];
  for (const org of orgs.docs) {
    if (!isDue(org.get('payoutSchedule'), now)) continue;
    const runId = `run_sched_${createHash('sha256').update(`${org.id}:${now.toISOString().slice(0, 10)}`).digest('hex').slice(0, 20)}`;
    // One organisation's failure (its lease held, Firestore contention) must not cost every later one its payday.
    try {
      runs.push((await runPayouts(OrgScope.system(org.id, 'payouts-job'), { trigger: 'schedule', runId })).id);
    } catch (error) {
      failures.push({ orgId: org.id, error });
    }
  }
  // Thrown after the others ran, so the scheduler reports the job failed and fires it again; the run ids make that safe.
  if (failures.length) {
    throw new AggregateError(failures.map((f) => f.error), `Scheduled payouts failed for ${failures.length} organisation(s): ${failures.map((f) => `${f.orgId}: ${String((f.error as Error)?.message ?? f.error)}`).join('; ')}`);
  }
  return { orgs: orgs.size, runs };
}
