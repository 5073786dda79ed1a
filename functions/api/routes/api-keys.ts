import type { DocumentData } from '@google-cloud/firestore';
import { z } from 'zod';
import { mayGrant } from '../../../shared/domain/roles';
import { apiKeyResource, createApiKeyBody, createdApiKeyResource, listQuery } from '../../../shared/domain/schemas';
import { forbidden, notFound } from '../../../shared/errors';
import { newId, newSecret } from '../../../shared/ids';
import { collections } from '../../../shared/names';
import { apiKeyPrefix, hashSecret } from '../../services/authentication';
import { actorOf } from '../../services/principal';
import { globalIndexDoc } from '../../services/tenancy';
import { created, ok, orgRoute } from '../router';

const toKey = (d: DocumentData) => ({ id: d.id, name: d.name, role: d.role, prefix: d.prefix, createdAt: d.createdAt, createdBy: d.createdBy, revokedAt: d.revokedAt ?? null });

export const apiKeyRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/api-keys', summary: 'API keys (never the key itself)', tag: 'API keys', permission: 'apiKeys:read', query: listQuery, response: z.object({ items: z.array(apiKeyResource), nextCursor: z.string().nullable() }) },
    async ({ scope, query }) => {
      const p = await scope.list<DocumentData>('apiKeys', query);
      return ok({ items: p.items.map(toKey), nextCursor: p.nextCursor });
    },
  ),
  orgRoute(
    { method: 'POST', path: '/v1/orgs/:orgId/api-keys', summary: 'Create an API key; the key is shown only in this response', tag: 'API keys', permission: 'apiKeys:write', body: createApiKeyBody, response: createdApiKeyResource, status: 201 },
    async ({ scope, body, principal }) => {
      if (!mayGrant(scope.role, body.role)) throw forbidden(`The ${scope.role} role may not create ${body.role} keys`);
      const key = newSecret(apiKeyPrefix);
      const id = newId('key');
      const doc = { id, name: body.name, role: body.role, prefix: key.slice(0, apiKeyPrefix.length + 7), hash: hashSecret(key), createdAt: new Date().toISOString(), createdBy: actorOf(principal).id, revokedAt: null };
      await scope.transact(async (tx, audit) => {
        tx.create(scope.collection('apiKeys').doc(id), doc);
        tx.create(globalIndexDoc(collections.apiKeyIndex, doc.hash), { orgId: scope.orgId, keyId: id, role: body.role, name: body.name });
        audit({ action: 'api_key.create', target: { type: 'api_key', id }, changes: { name: body.name, role: body.role } });
      });
      return created({ ...toKey(doc), key });
    },
  ),
  orgRoute(
    { method: 'DELETE', path: '/v1/orgs/:orgId/api-keys/:id', summary: 'Revoke an API key at once', tag: 'API keys', permission: 'apiKeys:write', response: apiKeyResource },
    async ({ scope, params }) => {
      const key = await scope.transact(async (tx, audit) => {
        const ref = scope.collection('apiKeys').doc(params.id!);
        const snap = await tx.get(ref);
        if (!snap.exists) throw notFound('API key');
        const current = snap.data()!;
        if (current.revokedAt) return current;
        const next = { ...current, revokedAt: new Date().toISOString() };
        tx.set(ref, next);
        tx.delete(globalIndexDoc(collections.apiKeyIndex, current.hash as string));
        audit({ action: 'api_key.revoke', target: { type: 'api_key', id: params.id! }, changes: { name: current.name } });
        return next;
      });
      return ok(toKey(key));
    },
  ),
];
