import type { DocumentData } from '@google-cloud/firestore';
import { z } from 'zod';
import { config } from '../../../shared/config';
import { createLinkBody, documentId, linkResource, listQuery, type Link } from '../../../shared/domain/schemas';
import { badRequest, conflict, type ErrorDetail } from '../../../shared/errors';
import { newLinkId } from '../../../shared/ids';
import { collections } from '../../../shared/names';
import { globalIndexDoc } from '../../services/tenancy';
import { created, ok, orgRoute } from '../router';

export const trackingUrl = (linkId: string) => `${config().publicBaseUrl}/c/${linkId}`;
const toLink = (d: DocumentData): Link => ({ id: d.id, url: trackingUrl(d.id), campaignId: d.campaignId, affiliateId: d.affiliateId, createdAt: d.createdAt });

const listLinksQuery = listQuery.extend({ campaignId: documentId.optional(), affiliateId: documentId.optional() });

export const linkRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/links', summary: 'Tracking links (an affiliate user sees only its own)', tag: 'Links', permission: 'links:read', query: listLinksQuery, response: z.object({ items: z.array(linkResource), nextCursor: z.string().nullable() }) },
    async ({ scope, query }) => {
      const p = await scope.list<DocumentData>('links', { ...query, equals: { campaignId: query.campaignId, affiliateId: query.affiliateId } });
      return ok({ items: p.items.map(toLink), nextCursor: p.nextCursor });
    },
  ),
  orgRoute(
    { method: 'POST', path: '/v1/orgs/:orgId/links', summary: 'Create a tracking link for an affiliate on a campaign', tag: 'Links', permission: 'links:write', body: createLinkBody, response: linkResource, status: 201, idempotent: true },
    async ({ scope, body, idempotency }) => {
      scope.assertActsFor(body.affiliateId);
      const { doc } = await scope.createOnce('links', idempotency, async (tx, audit) => {
        const [campaign, affiliate] = await tx.getAll(scope.collection('campaigns').doc(body.campaignId), scope.collection('affiliates').doc(body.affiliateId));
        const details: ErrorDetail[] = [];
        if (!campaign!.exists) details.push({ field: 'campaignId', message: 'no such campaign in this organisation' });
        if (!affiliate!.exists) details.push({ field: 'affiliateId', message: 'no such affiliate in this organisation' });
        if (details.length) throw badRequest('The link refers to a campaign or affiliate that does not exist', details);
        if (campaign!.get('status') === 'archived') throw conflict('The campaign is archived; links cannot be added to it');
        // A blocked affiliate's sales are all rejected (affiliate_inactive) while its clicks still count. (A paused
        // one may be given links ahead of its return.)
        if (affiliate!.get('status') === 'blocked') throw conflict('The affiliate is blocked; links cannot be added for it');
        const id = newLinkId();
        const doc = { id, orgId: scope.orgId, campaignId: body.campaignId, affiliateId: body.affiliateId, createdAt: new Date().toISOString() };
        // The click function resolves a link id without knowing the org: a global index document, written with the link.
        tx.create(globalIndexDoc(collections.linkIndex, id), doc);
        audit({ action: 'link.create', target: { type: 'link', id }, changes: { campaignId: body.campaignId, affiliateId: body.affiliateId } });
        return { id, doc };
      });
      return created(toLink(doc));
    },
  ),
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/links/:id', summary: 'A tracking link', tag: 'Links', permission: 'links:read', response: linkResource },
    async ({ scope, params }) => ok(toLink(await scope.getOrThrow<DocumentData>('links', params.id!, 'Link'))),
  ),
];
