import type { DocumentData } from '@google-cloud/firestore';
import { z } from 'zod';
import { mayGrant } from '../../../shared/domain/roles';
import { apiKeyResource, createApiKeyBody, createdApiKeyResource, listQuery } from '../../../shared/domain/schemas';
import { ApiError, forbidden, notFound } from '../../../shared/errors';
import { newId, newSecret } from '../../../shared/ids';
import { collections } from '../../../shared/names';
import { keysFallingWith, revokeKeys } from '../../services/api-keys';
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
    {
      method: 'POST', path: '/v1/orgs/:orgId/api-keys', tag: 'API keys', permission: 'apiKeys:write', body: createApiKeyBody, response: createdApiKeyResource, status: 201, idempotent: true,
      summary: 'Create an API key; the key is shown only in this response. A retry with the same Idempotency-Key creates no second key: it answers 409 naming the key already created, whose secret cannot be shown again',
    },
    async ({ scope, body, principal, idempotency }) => {
      if (!mayGrant(scope.role, body.role)) throw forbidden(`The ${scope.role} role may not create ${body.role} keys`);
      const key = newSecret(apiKeyPrefix);
      const { created: made, doc } = await scope.createOnce('apiKeys', idempotency, async (tx, audit) => {
        const id = newId('key');
        const doc: DocumentData = { id, name: body.name, role: body.role, prefix: key.slice(0, apiKeyPrefix.length + 7), hash: hashSecret(key), createdAt: new Date().toISOString(), createdBy: actorOf(principal).id, revokedAt: null };
        tx.create(globalIndexDoc(collections.apiKeyIndex, doc.hash as string), { orgId: scope.orgId, keyId: id, role: body.role, name: body.name });
        audit({ action: 'api_key.create', target: { type: 'api_key', id }, changes: { name: body.name, role: body.role } });
        return { id, doc };
      });
      if (!made) {
        // A replay cannot answer as the first request did: the key is shown once and only its hash is stored
        // (createOnce keeps just the new id per Idempotency-Key; keeping the response to replay it would put a live
        // credential in Firestore in plain). A 201 without the key would read as success to a client that then
        // holds no usable key while the one made stays live; a 409 stops it, names that key and says to revoke it.
        const id = doc.id as string;
        const next = doc.revokedAt
          ? 'It has since been revoked; create a new key with a new Idempotency-Key.'
          : `If that response was lost, revoke it (DELETE /v1/orgs/${scope.orgId}/api-keys/${id}) and create a new key with a new Idempotency-Key.`;
        throw new ApiError('conflict', `API key ${id} was already created with this Idempotency-Key. Its key was shown only in that first response and is not stored. ${next}`, [
          { field: 'Idempotency-Key', message: `already used to create API key ${id}` },
        ]);
      }
      return created({ ...toKey(doc), key });
    },
  ),
  orgRoute(
    { method: 'DELETE', path: '/v1/orgs/:orgId/api-keys/:id', summary: 'Revoke an API key at once, and the keys made with it', tag: 'API keys', permission: 'apiKeys:write', response: apiKeyResource },
    async ({ scope, params }) => {
      const key = await scope.transact(async (tx, audit) => {
        const ref = scope.collection('apiKeys').doc(params.id!);
        const snap = await tx.get(ref);
        if (!snap.exists) throw notFound('API key');
        const current = snap.data()!;
        // Also for a key revoked already: keys made with it before revocation cascaded go now.
        const madeWithIt = await keysFallingWith(tx, scope, params.id!, undefined);
        const next = current.revokedAt ? current : { ...current, revokedAt: revokeKeys(tx, [{ ref, doc: current }], audit) };
        revokeKeys(tx, madeWithIt, audit, `made with API key ${params.id}, revoked`);
        return next;
      });
      return ok(toKey(key));
    },
  ),
];
