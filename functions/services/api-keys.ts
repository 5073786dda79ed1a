import type { DocumentData, DocumentReference, Transaction } from '@google-cloud/firestore';
import { mayGrant, type Role } from '../../shared/domain/roles';
import { collections } from '../../shared/names';
import { globalIndexDoc, type AuditInput, type OrgScope } from './tenancy';

export interface KeyToRevoke {
  ref: DocumentReference;
  doc: DocumentData;
}

/**
 * A key lives only as long as whoever made it could make it now: a member removed, or demoted below the key's role,
 * takes those keys with them, and a key revoked takes the keys made with it. Otherwise a removed admin would keep
 * an admin key, and with it the power to make themselves a member again.
 *
 * `granter`: a member's user id or a key's id (keys record either as createdBy); `role`: what the granter may
 * still grant, undefined when it is gone. Reads only (a transaction reads before it writes): every live key to
 * revoke, with those made by them, at any depth.
 */
export async function keysFallingWith(tx: Transaction, scope: OrgScope, granter: string, role: Role | undefined): Promise<KeyToRevoke[]> {
  const falling: KeyToRevoke[] = [];
  let granters = [{ id: granter, role }];
  while (granters.length) {
    const next: typeof granters = [];
    for (const g of granters) {
      const made = await tx.get(scope.collection('apiKeys').where('createdBy', '==', g.id).where('revokedAt', '==', null));
      for (const d of made.docs) {
        if (g.role !== undefined && mayGrant(g.role, d.get('role') as Role)) continue;
        falling.push({ ref: d.ref, doc: d.data() });
        next.push({ id: d.id, role: undefined });
      }
    }
    granters = next;
  }
  return falling;
}

/**
 * Revokes keys at once: the key's record says when, and its index entry, which authentication reads, is gone.
 * `why`: for keys revoked with their maker, not by name. Answers the time it records.
 */
export function revokeKeys(tx: Transaction, keys: readonly KeyToRevoke[], audit: (entry: AuditInput) => void, why?: string): string {
  const at = new Date().toISOString();
  for (const { ref, doc } of keys) {
    tx.set(ref, { ...doc, revokedAt: at });
    tx.delete(globalIndexDoc(collections.apiKeyIndex, doc.hash as string));
    audit({ action: 'api_key.revoke', target: { type: 'api_key', id: ref.id }, changes: { name: doc.name, ...(why ? { reason: why } : {}) } });
  }
  return at;
}
