import type { DocumentData, Transaction } from '@google-cloud/firestore';
import { isAuthError, isAuthRetryableFetchError } from '@supabase/supabase-js';
import { z } from 'zod';
import { mayGrant, type Role } from '../../../shared/domain/roles';
import { createMemberBody, listQuery, memberResource, patchMemberBody, type Member } from '../../../shared/domain/schemas';
import { badGateway, badRequest, conflict, forbidden, notFound, unavailable } from '../../../shared/errors';
import { resolveUserIdByEmail } from '../../adapters/user-directory';
import { keysFallingWith, revokeKeys } from '../../services/api-keys';
import type { OrgScope } from '../../services/tenancy';
import { created, ok, orgRoute } from '../router';

const toMember = (d: DocumentData): Member => ({ userId: d.userId, email: d.email, role: d.role, createdAt: d.createdAt, updatedAt: d.updatedAt });
const page = z.object({ items: z.array(memberResource), nextCursor: z.string().nullable() });

function assertMayGrant(scope: OrgScope, role: Role): void {
  if (!mayGrant(scope.role, role)) throw forbidden(`The ${scope.role} role may not give the ${role} role`);
}

/** An organisation always keeps an owner: refuse a change that would remove the last one. */
async function assertKeepsAnOwner(tx: Transaction, scope: OrgScope, leavingUserId: string): Promise<void> {
  const owners = await tx.get(scope.collection('members').where('role', '==', 'owner').limit(2));
  if (owners.docs.every((d) => d.id === leavingUserId)) throw conflict('An organisation must keep at least one owner; make someone else owner first');
}

async function changeMember(scope: OrgScope, userId: string, change: { role: Role } | 'remove'): Promise<DocumentData> {
  return scope.transact(async (tx, audit) => {
    const ref = scope.collection('members').doc(userId);
    const snap = await tx.get(ref);
    if (!snap.exists) throw notFound('Member');
    const current = snap.data()!;
    if (current.role === 'owner' && scope.role !== 'owner') throw forbidden('Only an owner may change or remove an owner');
    if (change !== 'remove') assertMayGrant(scope, change.role);
    if (current.role === 'owner' && (change === 'remove' || change.role !== 'owner')) await assertKeepsAnOwner(tx, scope, userId);
    // Nothing changes, so nothing is written and nothing is audited (as for campaigns).
    if (change !== 'remove' && change.role === current.role) return current;
    const keys = await keysFallingWith(tx, scope, userId, change === 'remove' ? undefined : change.role);
    if (change === 'remove') {
      tx.delete(ref);
      audit({ action: 'member.remove', target: { type: 'member', id: userId }, changes: { email: current.email, role: current.role } });
      revokeKeys(tx, keys, audit, `made by ${current.email as string}, removed from the organisation`);
      return current;
    }
    const next = { ...current, role: change.role, updatedAt: new Date().toISOString() };
    tx.set(ref, next);
    audit({ action: 'member.update', target: { type: 'member', id: userId }, changes: { role: { from: current.role, to: change.role } } });
    revokeKeys(tx, keys, audit, `made by ${current.email as string}, now ${change.role}`);
    return next;
  });
}

async function isMemberByEmail(scope: OrgScope, email: string): Promise<boolean> {
  return !(await scope.collection('members').where('email', '==', email).select().limit(1).get()).empty;
}

async function resolveInvitee(email: string): Promise<string> {
  try {
    return await resolveUserIdByEmail(email);
  } catch (err) {
    throw directoryRefusal(err, email);
  }
}

/**
 * Supabase Auth's answers as ours: its refusals of the address are the client's to fix, its outages and rate
 * limits pass with time, and a refusal of our own credentials is the platform's to fix.
 */
function directoryRefusal(err: unknown, email: string): unknown {
  if (!isAuthError(err)) return err;
  const status = err.status ?? 0;
  if (isAuthRetryableFetchError(err) || status === 429 || status >= 500 || status === 0) {
    return unavailable('Supabase Auth is unavailable or rate limiting invitations; retry in a moment');
  }
  if (status === 401 || status === 403) {
    console.error(JSON.stringify({ severity: 'ERROR', message: 'Supabase Auth refused the service role key', status, code: err.code }));
    return badGateway("Supabase Auth refused the platform's credentials; inviting members needs SUPABASE_SERVICE_ROLE_KEY fixed");
  }
  const why = `Supabase Auth refused to invite ${email}: ${err.message}`;
  if (status === 409 || status === 422) return conflict(why);
  return badRequest(why, [{ field: 'email', message: err.message }]);
}

export const memberRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/members', summary: 'Members and their roles', tag: 'Members', permission: 'members:read', query: listQuery, response: page },
    async ({ scope, query }) => {
      const p = await scope.list<DocumentData>('members', query);
      return ok({ items: p.items.map(toMember), nextCursor: p.nextCursor });
    },
  ),
  orgRoute(
    { method: 'POST', path: '/v1/orgs/:orgId/members', summary: 'Invite a colleague by email with a role', tag: 'Members', permission: 'members:write', body: createMemberBody, response: memberResource, status: 201 },
    async ({ scope, body }) => {
      assertMayGrant(scope, body.role);
      // Before Supabase is asked: it sends an invitation email, which a colleague already here must not get.
      if (await isMemberByEmail(scope, body.email)) throw conflict(`${body.email} is already a member`);
      const userId = await resolveInvitee(body.email);
      const member = await scope.transact(async (tx, audit) => {
        const ref = scope.collection('members').doc(userId);
        if ((await tx.get(ref)).exists) throw conflict(`${body.email} is already a member`);
        const now = new Date().toISOString();
        const doc = { userId, email: body.email, role: body.role, orgId: scope.orgId, createdAt: now, updatedAt: now };
        tx.create(ref, doc);
        audit({ action: 'member.add', target: { type: 'member', id: userId }, changes: { email: body.email, role: body.role } });
        return doc;
      });
      return created(toMember(member));
    },
  ),
  orgRoute(
    { method: 'PATCH', path: '/v1/orgs/:orgId/members/:userId', summary: "Change a member's role; the API keys they made above what the new role may grant are revoked", tag: 'Members', permission: 'members:write', body: patchMemberBody, response: memberResource },
    async ({ scope, params, body }) => ok(toMember(await changeMember(scope, params.userId!, body))),
  ),
  orgRoute(
    { method: 'DELETE', path: '/v1/orgs/:orgId/members/:userId', summary: 'Remove a member, revoking the API keys they made', tag: 'Members', permission: 'members:write', response: memberResource },
    async ({ scope, params }) => ok(toMember(await changeMember(scope, params.userId!, 'remove'))),
  ),
];
