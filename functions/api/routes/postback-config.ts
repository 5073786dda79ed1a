import type { DocumentReference, Transaction } from '@google-cloud/firestore';
import { config } from '../../../shared/config';
import { collections } from '../../../shared/names';
import { newSecret } from '../../../shared/ids';
import { postbackConfigResource } from '../../../shared/domain/schemas';
import { hashSecret } from '../../services/authentication';
import { globalIndexDoc } from '../../services/tenancy';
import { ok, orgRoute } from '../router';

/**
 * Conversions come in two ways, each with a token of its own: the postback, called by the advertiser's server,
 * whose token stays secret; and the pixel, embedded in checkout pages, whose token anyone can read in the page
 * source. Were they one token, reading a checkout page would be enough to call the postback with any amount.
 * Each is accepted only where it belongs (conversion-intake.ts), and each can be rotated alone.
 */
export type TrackingTokenKind = 'postback' | 'pixel';
const orgField: Record<TrackingTokenKind, 'postbackToken' | 'pixelToken'> = { postback: 'postbackToken', pixel: 'pixelToken' };
const prefix: Record<TrackingTokenKind, string> = { postback: 'pbt', pixel: 'pxt' };

/** Issues a new token of one kind: the org keeps it (advertisers read it back), the global index its hash. */
export function issueTrackingToken(tx: Transaction, orgRef: DocumentReference, orgId: string, kind: TrackingTokenKind, previous?: string): string {
  const token = newSecret(prefix[kind]);
  tx.set(orgRef, { [orgField[kind]]: token }, { merge: true });
  tx.set(globalIndexDoc(collections.postbackTokenIndex, hashSecret(token)), { orgId, kind });
  if (previous) tx.delete(globalIndexDoc(collections.postbackTokenIndex, hashSecret(previous)));
  return token;
}

export function postbackConfig(tokens: Record<TrackingTokenKind, string>) {
  const base = config().publicBaseUrl;
  return {
    token: tokens.postback,
    postbackUrl: `${base}/postback?token=${encodeURIComponent(tokens.postback)}&click_id={click_id}&txn_id={txn_id}&amount={amount}&currency={currency}&event={event}`,
    pixelToken: tokens.pixel,
    pixelUrl: `${base}/pixel?token=${encodeURIComponent(tokens.pixel)}&txn_id={txn_id}&amount={amount}&currency={currency}&event={event}`,
  };
}

const rotateRoute = (kind: TrackingTokenKind, path: string, summary: string) =>
  orgRoute(
    { method: 'POST', path, summary, tag: 'Tracking setup', permission: 'postback:write', response: postbackConfigResource },
    async ({ scope }) => {
      const tokens = await scope.transact(async (tx, audit) => {
        const org = await tx.get(scope.orgRef);
        const current = { postback: org.get('postbackToken') as string, pixel: org.get('pixelToken') as string | undefined };
        const pixel = kind === 'pixel' || !current.pixel ? issueTrackingToken(tx, scope.orgRef, scope.orgId, 'pixel', current.pixel) : current.pixel;
        const postback = kind === 'postback' ? issueTrackingToken(tx, scope.orgRef, scope.orgId, 'postback', current.postback) : current.postback;
        audit({ action: `${kind}_token.rotate`, target: { type: 'org', id: scope.orgId } });
        return { postback, pixel };
      });
      return ok(postbackConfig(tokens));
    },
  );

export const postbackConfigRoutes = [
  orgRoute(
    { method: 'GET', path: '/v1/orgs/:orgId/postback-config', summary: 'The postback and pixel tokens, with ready-to-use URL templates', tag: 'Tracking setup', permission: 'postback:read', response: postbackConfigResource },
    async ({ scope }) => {
      const org = await scope.orgRef.get();
      const postback = org.get('postbackToken') as string;
      let pixel = org.get('pixelToken') as string | undefined;
      // Organisations created before pixels had a token of their own get one on first read.
      pixel ??= await scope.transact(async (tx, audit) => {
        const again = await tx.get(scope.orgRef);
        const existing = again.get('pixelToken') as string | undefined;
        if (existing) return existing;
        audit({ action: 'pixel_token.issue', target: { type: 'org', id: scope.orgId } });
        return issueTrackingToken(tx, scope.orgRef, scope.orgId, 'pixel');
      });
      return ok(postbackConfig({ postback, pixel }));
    },
  ),
  rotateRoute('postback', '/v1/orgs/:orgId/postback-config/rotate', 'Replace the postback token; the old one stops working at once'),
  rotateRoute('pixel', '/v1/orgs/:orgId/postback-config/rotate-pixel', 'Replace the pixel token; the old one stops working at once (update the checkout pages first)'),
];
