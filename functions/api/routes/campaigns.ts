import { FieldPath, type DocumentData } from '@google-cloud/firestore';
import { z } from 'zod';
import { campaignResource, campaignStatuses, createCampaignBody, listQuery, patchCampaignBody, type Campaign } from '../../../shared/domain/schemas';
import { conflict, notFound } from '../../../shared/errors';
import { newId } from '../../../shared/ids';
import type { OrgScope } from '../../services/tenancy';
import { changedFields } from '../changes';
import { created, ok, orgRoute } from '../router';
import { assertCampaignsFitPlan } from '../../services/plan-limits';

/** Affiliates see what they earn, never what the advertiser pays nor the internal caps. */
export function toCampaign(d: DocumentData, scope: OrgScope): Campaign {
  const c = {
    id: d.id, name: d.name, destinationUrl: d.destinationUrl, status: d.status, currency: d.currency, payout: d.payout, revenue: d.revenue,
    attributionWindowDays: d.attributionWindowDays, holdDays: d.holdDays, caps: d.caps, targeting: d.targeting, createdAt: d.createdAt, updatedAt: d.updatedAt,
  } as Campaign;
  if (scope.role === 'affiliate') {
    const { revenue: _r, caps: _c, ...visible } = c;
    return visible as Campaign;
  }
  return c;
}

const listCampaignsQuery = listQuery.extend({ status: z.enum(campaignStatuses).optional() });

export const campaignRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/campaigns', summary: 'Campaigns, newest first', tag: 'Campaigns', permission: 'campaigns:read', query: listCampaignsQuery, response: z.object({ items: z.array(campaignResource), nextCursor: z.string().nullable() }) },
    async ({ scope, query }) => {
      const p = await scope.list<DocumentData>('campaigns', { ...query, equals: { status: query.status } });
      return ok({ items: p.items.map((d) => toCampaign(d, scope)), nextCursor: p.nextCursor });
    },
  ),
  orgRoute(
    { method: 'POST', path: '/v1/orgs/:orgId/campaigns', summary: 'Create a campaign', tag: 'Campaigns', permission: 'campaigns:write', body: createCampaignBody, response: campaignResource, status: 201, idempotent: true },
    async ({ scope, body, idempotency }) => {
      const { doc } = await scope.createOnce('campaigns', idempotency, async (tx, audit) => {
        if (body.status !== 'archived') await assertCampaignsFitPlan(tx, scope, { adding: 1 });
        const id = newId('cmp');
        const now = new Date().toISOString();
        audit({ action: 'campaign.create', target: { type: 'campaign', id }, changes: { name: body.name, status: body.status } });
        return { id, doc: { id, ...body, createdAt: now, updatedAt: now } };
      });
      return created(toCampaign(doc, scope));
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/campaigns/:id', summary: 'A campaign', tag: 'Campaigns', permission: 'campaigns:read', response: campaignResource },
    async ({ scope, params }) => ok(toCampaign(await scope.getOrThrow<DocumentData>('campaigns', params.id!, 'Campaign'), scope)),
  ),
  orgRoute(
    { method: 'PATCH', path: '/v1/orgs/:orgId/campaigns/:id', summary: 'Change a campaign', tag: 'Campaigns', permission: 'campaigns:write', body: patchCampaignBody, response: campaignResource },
    async ({ scope, params, body }) => ok(toCampaign(await updateCampaign(scope, params.id!, body), scope)),
  ),
  orgRoute(
    { method: 'DELETE', path: '/v1/orgs/:orgId/campaigns/:id', summary: 'Archive a campaign (it stops tracking; its history stays)', tag: 'Campaigns', permission: 'campaigns:write', response: campaignResource },
    async ({ scope, params }) => ok(toCampaign(await updateCampaign(scope, params.id!, { status: 'archived' }), scope)),
  ),
];

async function updateCampaign(scope: OrgScope, id: string, patch: Record<string, unknown>): Promise<DocumentData> {
  return scope.transact(async (tx, audit) => {
    const ref = scope.collection('campaigns').doc(id);
    const snap = await tx.get(ref);
    if (!snap.exists) throw notFound('Campaign');
    const current = snap.data()!;
    if (current.status === 'archived' && patch.status && patch.status !== 'archived') await assertCampaignsFitPlan(tx, scope, { adding: 1 });
    // Its payouts, caps and the amounts advertisers send are in this currency: once links are out, a new currency
    // would silently re-denominate them.
    if (patch.currency !== undefined && patch.currency !== current.currency) {
      const linked = await tx.get(scope.collection('links').where('campaignId', '==', id).select().limit(1));
      if (!linked.empty) throw conflict('A campaign\'s currency cannot change once it has links: its payouts, caps and the amounts advertisers send are in that currency; create a new campaign instead');
      // Affiliates' fixed-amount overrides are in the campaign's minor units too (¥500,000 would become $5,000.00).
      const overridden = await tx.get(scope.collection('affiliates').where(new FieldPath('payoutOverrides', id, 'type'), '==', 'cpa').select().limit(1));
      if (!overridden.empty) {
        throw conflict(`A campaign's currency cannot change while an affiliate has a fixed payout override for it (affiliate ${overridden.docs[0]!.id}): its amount is in the campaign's currency; change or remove the override first`);
      }
    }
    const changes = changedFields(current, patch);
    if (!Object.keys(changes).length) return current;
    const next = { ...current, ...patch, updatedAt: new Date().toISOString() };
    tx.set(ref, next);
    audit({ action: patch.status === 'archived' && Object.keys(patch).length === 1 ? 'campaign.archive' : 'campaign.update', target: { type: 'campaign', id }, changes });
    return next;
  });
}
