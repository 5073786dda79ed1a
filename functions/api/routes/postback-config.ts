import type { DocumentReference, Transaction } from '@google-cloud/firestore';
import { config } from '../../../shared/config';
import { collections } from '../../../shared/names';
import { newSecret } from '../../../shared/ids';
import { postbackConfigResource } from '../../../shared/domain/schemas';
import { hashSecret } from '../../services/authentication';
import { globalIndexDoc } from '../../services/tenancy';
import { ok, orgRoute } from '../router';

/** Issues a new postback token: the org keeps it (advertisers read it back), the global index keeps its hash. */
export function issuePostbackToken(tx: Transaction, orgRef: DocumentReference, orgId: string, previous?: string): string {
  const token = newSecret('pbt');
  tx.set(orgRef, { postbackToken: token }, { merge: true });
  tx.set(globalIndexDoc(collections.postbackTokenIndex, hashSecret(token)), { orgId });
  if (previous) tx.delete(globalIndexDoc(collections.postbackTokenIndex, hashSecret(previous)));
  return token;
}

export function postbackConfig(token: string) {
  const base = config().publicBaseUrl;
  return {
    token,
    postbackUrl: `${base}/postback?token=${encodeURIComponent(token)}&click_id={click_id}&txn_id={txn_id}&amount={amount}&currency={currency}&event={event}`,
  };
}

export const postbackConfigRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/postback-config', summary: 'The postback token and a ready-to-use postback URL template', tag: 'Tracking setup', permission: 'postback:read', response: postbackConfigResource },
    async ({ scope }) => {
      const org = await scope.orgRef.get();
      return ok(postbackConfig(org.get('postbackToken') as string));
    },
  ),
  orgRoute(
    { method: 'POST', path: '/v1/orgs/:orgId/postback-config/rotate', summary: 'Replace the postback token; the old one stops working at once', tag: 'Tracking setup', permission: 'postback:write', response: postbackConfigResource },
    async ({ scope }) => {
      const token = await scope.transact(async (tx, audit) => {
        const org = await tx.get(scope.orgRef);
        const next = issuePostbackToken(tx, scope.orgRef, scope.orgId, org.get('postbackToken') as string | undefined);
        audit({ action: 'postback_token.rotate', target: { type: 'org', id: scope.orgId } });
        return next;
      });
      return ok(postbackConfig(token));
    },
  ),
];
