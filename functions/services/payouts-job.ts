import { createHash } from 'node:crypto';
import type { QueryDocumentSnapshot } from '@google-cloud/firestore';
import { deterministicId } from '../../shared/ids';
import { collections } from '../../shared/names';
import { firestore } from '../adapters/firestore';
import { unsettledPayoutStatuses } from './ledger-reversals';
import { finishUnsettledPayouts, runPayouts } from './payout-runs';
import { OrgScope } from './tenancy';

/**
 * The hourly payouts job. Each tick first finishes, in every organisation, the payouts earlier runs left unsettled
 * (kept after a 429 or a lost answer, or left by a crash), whatever its schedule: that money was due when its run
 * claimed it. Then it starts the scheduled run of every organisation whose schedule falls on today (UTC). The run
 * id is derived from the organisation and the date, so however often the scheduler fires that day, there is one run.
 */
export function isDue(schedule: { frequency: 'weekly' | 'monthly'; day: number }, now: Date): boolean {
  if (schedule.frequency === 'weekly') return ((now.getUTCDay() + 6) % 7) + 1 === schedule.day;
  return now.getUTCDate() === schedule.day;
}

export interface PayoutsJobResult {
  /** Organisations with a payout schedule, and the runs of those due today. */
  orgs: number;
  runs: string[];
  /** Organisations whose unsettled payouts (or reversals left to apply) were finished this tick: each unsettled payout as it is now. */
  finished: { orgId: string; payouts: { id: string; status: string; reason: string | null }[] }[];
  /** Organisations with something unfinished whose lease another run held: that run, or the next tick, finishes them. */
  busy: string[];
  /** Organisations with something unfinished not reached within the finishing budget: the next tick finishes them. */
  deferred: string[];
}

/**
 * How long a tick spends finishing kept payouts before it starts the due runs: a third of the job's 30 minutes
 * (infra/functions.ts), so that a backlog of kept payouts (after a long Stripe outage, say) cannot use up the
 * tick and cost the organisations due today their payday. What is left goes to the next tick.
 */
const finishBudgetMs = 10 * 60_000;

/** What failed: an organisation's id, or the lookup of the organisations to finish. */
type Failure = { orgId: string; error: unknown };

const unsettledPage = 500;

/**
 * The organisations that have a payout some run left unsettled, or a reversal left to apply (parked on a payout a
 * pass settled and then died before applying it, or the rest of a full reversal's entries whose webhook stopped
 * halfway and Stripe gave up redelivering): collection-group queries on those fields (indexes infra/ declares),
 * reading only those payouts' names, never every payout. Without the second kind, an organisation with nothing
 * unsettled would show money Stripe took back as paid until its next run, which a manual-only one may never have.
 */
async function orgsWithUnfinishedPayouts(): Promise<string[]> {
  const orgIds = new Set<string>();
  const group = () => firestore().collectionGroup(collections.payouts);
  for (const query of [group().where('status', 'in', [...unsettledPayoutStatuses]), group().where('reversalParked', '==', true), group().where('restoringEntries', '==', true)]) {
    let last: QueryDocumentSnapshot | undefined;
    for (;;) {
      let q = query.select().limit(unsettledPage);
      if (last) q = q.startAfter(last);
      const page = await q.get();
      for (const d of page.docs) {
        const org = d.ref.parent.parent;
        if (org?.parent.id === collections.orgs) orgIds.add(org.id);
      }
      if (page.size < unsettledPage) break;
      last = page.docs[page.docs.length - 1];
    }
  }
  return [...orgIds];
}

async function finishEverywhere(now: Date, budgetMs: number, failures: Failure[]): Promise<Pick<PayoutsJobResult, 'finished' | 'busy' | 'deferred'>> {
  const deadline = Date.now() + budgetMs;
  const finished: PayoutsJobResult['finished'] = [];
  const busy: string[] = [];
  const deferred: string[] = [];
  const hour = now.toISOString().slice(0, 13);
  let orgIds: string[];
  try {
    orgIds = await orgsWithUnfinishedPayouts();
  } catch (error) {
    // The due runs below finish their own organisations' payouts anyway; the failure is reported after them.
    failures.push({ orgId: 'unsettled payouts lookup', error });
    return { finished, busy, deferred };
  }
  for (const orgId of orgIds) {
    if (Date.now() >= deadline) {
      deferred.push(orgId);
      continue;
    }
    try {
      // Named by organisation and hour: a scheduler firing twice meets the same lease, and settled payouts.
      const r = await finishUnsettledPayouts(OrgScope.system(orgId, 'payouts-job'), deterministicId('finish', orgId, hour));
      if (r.status === 'busy') busy.push(orgId);
      else finished.push({ orgId, payouts: r.payouts.map((p) => ({ id: p.id, status: p.status, reason: p.reason })) });
    } catch (error) {
      failures.push({ orgId, error });
    }
  }
  if (finished.length || busy.length || deferred.length) console.log(JSON.stringify({ severity: 'INFO', message: 'payouts job: unsettled payouts finished', finished, busy, deferred }));
  return { finished, busy, deferred };
}

export async function runDueScheduledPayouts(now = new Date(), opts: { finishBudgetMs?: number } = {}): Promise<PayoutsJobResult> {
  const failures: Failure[] = [];
  // Before the due runs, so a run plans from a ledger whose earlier payouts are settled (a due organisation's run
  // finishes its own kept payouts first anyway, so one deferred past the budget is still paid today).
  const { finished, busy, deferred } = await finishEverywhere(now, opts.finishBudgetMs ?? finishBudgetMs, failures);
  const orgs = await firestore().collection(collections.orgs).where('payoutSchedule.frequency', 'in', ['weekly', 'monthly']).get();
  const runs: string[] = [];
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
  // Thrown after the others ran, so the scheduler reports the job failed and fires it again; the ids make that safe.
  if (failures.length) {
    throw new AggregateError(failures.map((f) => f.error), `Scheduled payouts failed for ${failures.length} organisation(s): ${failures.map((f) => `${f.orgId}: ${String((f.error as Error)?.message ?? f.error)}`).join('; ')}`);
  }
  return { orgs: orgs.size, runs, finished, busy, deferred };
}
