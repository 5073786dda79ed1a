import { AuthClient } from '@supabase/supabase-js';
import { config } from '../../shared/config';

export interface VerifiedUser {
  userId: string;
  email: string;
}

type Auth = InstanceType<typeof AuthClient>;
let client: Auth | undefined;

/**
 * supabase-js's auth client on its own: createClient() would also build a Realtime client, which needs a
 * native WebSocket that Node 20 lacks, and the API needs nothing but token verification.
 */
export function authClient(key = config().SUPABASE_ANON_KEY): Auth {
  const url = `${config().supabaseUrl}/auth/v1`;
  const headers = { apikey: key, Authorization: `Bearer ${key}` };
  const options = { url, headers, persistSession: false, autoRefreshToken: false, detectSessionInUrl: false };
  if (key !== config().SUPABASE_ANON_KEY) return new AuthClient(options);
  client ??= new AuthClient(options);
  return client;
}

/**
 * Verifies a Supabase access token with supabase-js against the project's JWKS (cached by the library).
 * getClaims checks the signature and expiry; issuer and audience are ours to check.
 */
export async function verifyAccessToken(token: string): Promise<VerifiedUser | undefined> {
  const c = config();
  let result: Awaited<ReturnType<Auth['getClaims']>>;
  try {
    result = await authClient().getClaims(token);
  } catch {
    return undefined; // malformed tokens throw before verification
  }
  const claims = result.data?.claims;
  if (result.error || !claims) return undefined;
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (claims.iss !== `${c.supabaseUrl}/auth/v1` || !audiences.includes(c.SUPABASE_JWT_AUDIENCE)) return undefined;
  if (typeof claims.sub !== 'string' || !claims.sub || typeof claims.email !== 'string') return undefined;
  return { userId: claims.sub, email: claims.email.toLowerCase() };
}
