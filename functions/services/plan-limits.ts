import type { Transaction } from '@google-cloud/firestore';
import type { plans } from '../../shared/domain/schemas';
import { ApiError } from '../../shared/errors';
import type { OrgScope } from './tenancy';

type Plan = (typeof plans)[number];

export const planLimits: Record<Plan, { activeCampaigns: number }> = {
  starter: { activeCampaigns: 5 },
  professional: { activeCampaigns: 100 },
  enterprise: { activeCampaigns: Number.POSITIVE_INFINITY },
};

/**
 * Whether the organisation's campaigns that are not archived fit its plan, with `adding` more (a create or an
 * unarchive: 1; a change of plan: 0). Read inside the transaction, so concurrent creates cannot both slip under
 * the limit. `plan` is the plan to check against, the organisation's own when not given.
 */
export async function assertCampaignsFitPlan(tx: Transaction, scope: OrgScope, opts: { adding: number; plan?: Plan }): Promise<void> {
  const plan = opts.plan ?? (((await tx.get(scope.orgRef)).get('plan') ?? 'starter') as Plan);
  const limit = planLimits[plan].activeCampaigns;
  if (!Number.isFinite(limit)) return;
  const live = await tx.get(scope.collection('campaigns').where('status', 'in', ['draft', 'active', 'paused']).select().limit(limit + 1));
  if (live.size + opts.adding > limit) {
    const hint = opts.adding ? 'archive one or upgrade the plan' : 'archive some first';
    throw new ApiError('plan_limit', `The ${plan} plan allows ${limit} campaigns that are not archived; ${hint}`, [{ field: 'plan', message: `limit of ${limit} ${opts.adding ? 'reached' : 'exceeded'}` }]);
  }
}
