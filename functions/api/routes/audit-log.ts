import type { DocumentData } from '@google-cloud/firestore';
import { z } from 'zod';
import { auditEntryResource, documentId, listQuery } from '../../../shared/domain/schemas';
import { ok, orgRoute } from '../router';

const auditQuery = listQuery.extend({ targetId: documentId.optional(), action: z.string().regex(/^[a-z_]+(\.[a-z_]+)+$/, 'must be an action such as campaign.update').max(64).optional() });

export const auditRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/audit-log', summary: 'Changes made through the API to the organisation, members, API keys, campaigns, affiliates, links, tokens and conversions: who, what, which record, what changed, when (payout runs are listed under payout-runs)', tag: 'Audit', permission: 'audit:read', query: auditQuery, response: z.object({ items: z.array(auditEntryResource), nextCursor: z.string().nullable() }) },
    async ({ scope, query }) => {
      const p = await scope.list<DocumentData>('auditLog', { ...query, equals: { 'target.id': query.targetId, action: query.action } });
      return ok({ items: p.items, nextCursor: p.nextCursor });
    },
  ),
];
