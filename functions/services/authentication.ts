import { createHmac } from 'node:crypto';
import { collections } from '../../shared/names';
import { unauthorized } from '../../shared/errors';
import type { Role } from '../../shared/domain/roles';
import { firestore } from '../adapters/firestore';
import { secrets } from '../adapters/local-secrets';
import { verifyAccessToken } from '../adapters/supabase-identity';
import type { Principal } from './principal';

export const apiKeyPrefix = 'abp_live';

/** API keys and postback tokens are stored only as keyed hashes; a leaked database does not leak keys. */
export function hashSecret(secret: string): string {
  return createHmac('sha256', secrets().hashKey).update(secret).digest('base64url');
}

/** Turns an Authorization header into a principal: an API key (by its prefix) or a Supabase access token. */
export async function authenticate(authorization: string | undefined): Promise<Principal> {
  const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? '');
  if (!m) throw unauthorized('Send Authorization: Bearer <access token or API key>');
  const credential = m[1]!;
  if (credential.startsWith(`${apiKeyPrefix}_`)) {
    // Read on every request, with no cache, so that a revoked key stops working at once.
    const snap = await firestore().doc(`${collections.apiKeyIndex}/${hashSecret(credential)}`).get();
    if (!snap.exists) throw unauthorized('Unknown or revoked API key');
    const d = snap.data() as { orgId: string; keyId: string; role: Role; name: string };
    return { kind: 'apiKey', keyId: d.keyId, orgId: d.orgId, role: d.role, name: d.name };
  }
  const user = await verifyAccessToken(credential);
  if ('refused' in user) throw unauthorized(user.refused);
  return { kind: 'user', ...user };
}
