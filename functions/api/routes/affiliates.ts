import type { DocumentData, Transaction } from '@google-cloud/firestore';
import { z } from 'zod';
import { affiliateResource, affiliateStatuses, createAffiliateBody, listQuery, patchAffiliateBody, type Affiliate } from '../../../shared/domain/schemas';
import { badRequest, notFound, type ErrorDetail } from '../../../shared/errors';
import { newId } from '../../../shared/ids';
import type { OrgScope } from '../../services/tenancy';
import { changedFields } from '../changes';
import { created, ok, orgRoute } from '../router';

export const toAffiliate = (d: DocumentData): Affiliate => ({
  id: d.id, name: d.name, email: d.email, status: d.status, payoutCurrency: d.payoutCurrency, minimumPayout: d.minimumPayout,
  payoutOverrides: d.payoutOverrides ?? {}, userIds: d.userIds ?? [], stripeAccountId: d.stripeAccountId ?? null, payoutsEnabled: d.payoutsEnabled ?? false,
  createdAt: d.createdAt, updatedAt: d.updatedAt,
});

/** Overrides must name this organisation's campaigns, and acting users must be its members. */
async function assertReferences(tx: Transaction, scope: OrgScope, body: { payoutOverrides?: Record<string, unknown>; userIds?: string[] }): Promise<void> {
  const details: ErrorDetail[] = [];
  const campaignIds = Object.keys(body.payoutOverrides ?? {});
  const userIds = body.userIds ?? [];
  const refs = [...campaignIds.map((id) => scope.collection('campaigns').doc(id)), ...userIds.map((id) => scope.collection('members').doc(id))];
  if (!refs.length) return;
  const snaps = await tx.getAll(...refs);
  snaps.forEach((s, i) => {
    if (s.exists) return;
    if (i < campaignIds.length) details.push({ field: `payoutOverrides.${campaignIds[i]}`, message: 'no such campaign in this organisation' });
    else details.push({ field: `userIds.${i - campaignIds.length}`, message: 'not a member of this organisation; invite them first' });
  });
  if (details.length) throw badRequest('The affiliate refers to campaigns or users that do not exist here', details);
}

const listAffiliatesQuery = listQuery.extend({ status: z.enum(affiliateStatuses).optional() });

export const affiliateRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/affiliates', summary: 'Affiliates (an affiliate user sees only its own)', tag: 'Affiliates', permission: 'affiliates:read', query: listAffiliatesQuery, response: z.object({ items: z.array(affiliateResource), nextCursor: z.string().nullable() }) },
    async ({ scope, query }) => {
      const p = await scope.list<DocumentData>('affiliates', { ...query, equals: { status: query.status } });
      return ok({ items: p.items.map(toAffiliate), nextCursor: p.nextCursor });
    },
  ),
  orgRoute(
    { method: 'POST', path: '/v1/orgs/:orgId/affiliates', summary: 'Add an affiliate', tag: 'Affiliates', permission: 'affiliates:write', body: createAffiliateBody, response: affiliateResource, status: 201, idempotent: true },
    async ({ scope, body, idempotency }) => {
      const { doc } = await scope.createOnce('affiliates', idempotency, async (tx, audit) => {
        await assertReferences(tx, scope, body);
        const id = newId('aff');
        const now = new Date().toISOString();
        audit({ action: 'affiliate.create', target: { type: 'affiliate', id }, changes: { name: body.name, email: body.email } });
        return { id, doc: { id, ...body, createdAt: now, updatedAt: now } };
      });
      return created(toAffiliate(doc));
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/affiliates/:id', summary: 'An affiliate', tag: 'Affiliates', permission: 'affiliates:read', response: affiliateResource },
    async ({ scope, params }) => ok(toAffiliate(await scope.getOrThrow<DocumentData>('affiliates', params.id!, 'Affiliate'))),
  ),
  orgRoute(
    { method: 'PATCH', path: '/v1/orgs/:orgId/affiliates/:id', summary: 'Change an affiliate', tag: 'Affiliates', permission: 'affiliates:write', body: patchAffiliateBody, response: affiliateResource },
    async ({ scope, params, body }) => {
      const doc = await scope.transact(async (tx, audit) => {
        const ref = scope.collection('affiliates').doc(params.id!);
        const snap = await tx.get(ref);
        if (!snap.exists) throw notFound('Affiliate');
        await assertReferences(tx, scope, body);
        const current = snap.data()!;
        const changes = changedFields(current, body);
        if (!Object.keys(changes).length) return current;
        const next = { ...current, ...body, updatedAt: new Date().toISOString() };
        tx.set(ref, next);
        audit({ action: 'affiliate.update', target: { type: 'affiliate', id: params.id! }, changes });
        return next;
      });
      return ok(toAffiliate(doc));
    },
  ),
];
