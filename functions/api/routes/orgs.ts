import type { DocumentData } from '@google-cloud/firestore';
import { z } from 'zod';
import { createOrgBody, orgResource, patchOrgBody, type Org } from '../../../shared/domain/schemas';
import { forbidden } from '../../../shared/errors';
import { deterministicId, newId } from '../../../shared/ids';
import { assertCampaignsFitPlan } from '../../services/plan-limits';
import { createOrganisation, listMyOrgs } from '../../services/tenancy';
import { changedFields } from '../changes';
import { created, ok, orgRoute, userRoute } from '../router';
import { issueTrackingToken } from './postback-config';

export function toOrg(d: DocumentData): Org {
  return { id: d.id, name: d.name, type: d.type, plan: d.plan, fallbackUrl: d.fallbackUrl ?? null, payoutSchedule: d.payoutSchedule ?? null, createdAt: d.createdAt, updatedAt: d.updatedAt };
}


export const orgRoutes = [
  userRoute(
    { method: 'POST', path: '/v1/orgs', summary: 'Create an organisation; the caller becomes its owner', tag: 'Organisations', body: createOrgBody, response: orgResource, status: 201, idempotent: true },
    async ({ principal, body, idempotency }) => {
      if (principal.kind !== 'user') throw forbidden('Organisations are created by users, not API keys');
      const id = idempotency ? deterministicId('org', principal.userId, idempotency.key) : newId('org');
      const now = new Date().toISOString();
      const result = await createOrganisation(principal, id, { id, ...body, fallbackUrl: null, createdAt: now, updatedAt: now }, (tx, ref) => {
        issueTrackingToken(tx, ref, id, 'postback');
        issueTrackingToken(tx, ref, id, 'pixel');
      }, idempotency);
      return created(toOrg(result.org));
    },
  ),
  userRoute(
    { method: 'GET', path: '/v1/orgs', summary: 'The organisations the caller belongs to', tag: 'Organisations', response: z.object({ items: z.array(orgResource), nextCursor: z.null() }) },
    async ({ principal }) => ok({ items: (await listMyOrgs(principal)).map(toOrg), nextCursor: null }),
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId', summary: 'An organisation', tag: 'Organisations', permission: 'org:read', response: orgResource },
    async ({ scope }) => ok(toOrg((await scope.orgRef.get()).data()!)),
  ),
  orgRoute(
    { method: 'PATCH', path: '/v1/orgs/:orgId', summary: 'Rename, change type or plan, or set the fallback URL for visits a campaign does not take (not active, outside its targeting, past a click cap)', tag: 'Organisations', permission: 'org:write', body: patchOrgBody, response: orgResource },
    async ({ scope, body }) => {
      const org = await scope.transact(async (tx, audit) => {
        const current = (await tx.get(scope.orgRef)).data()!;
        // A smaller plan must fit the campaigns already live.
        if (body.plan && body.plan !== current.plan) await assertCampaignsFitPlan(tx, scope, { adding: 0, plan: body.plan });
        const changes = changedFields(current, body);
        // Nothing changes, so nothing is written and nothing is audited (as for campaigns).
        if (!Object.keys(changes).length) return current;
        const next = { ...current, ...body, updatedAt: new Date().toISOString() };
        tx.set(scope.orgRef, next);
        audit({ action: 'org.update', target: { type: 'org', id: scope.orgId }, changes });
        return next;
      });
      return ok(toOrg(org));
    },
  ),
];
