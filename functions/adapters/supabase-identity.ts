import { AuthClient, isAuthRetryableFetchError } from '@supabase/supabase-js';
import { z } from 'zod';
import { documentId } from '../../shared/domain/schemas';
import { config, supabaseAnonKey } from '../../shared/config';
import { unavailable } from '../../shared/errors';

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
export function authClient(key = supabaseAnonKey()): Auth {
  const url = `${config().supabaseUrl}/auth/v1`;
  const headers = { apikey: key, Authorization: `Bearer ${key}` };
  const options = { url, headers, persistSession: false, autoRefreshToken: false, detectSessionInUrl: false };
  if (key !== supabaseAnonKey()) return new AuthClient(options);
  client ??= new AuthClient(options);
  return client;
}

/**
 * Tokens verified lately, each until its expiry or for a minute, whichever is sooner. Verifying costs about
 * 0.6 ms of CPU per request (supabase-js imports the JWKS key into WebCrypto on every getClaims; measured in
 * the tracking benchmark's profile of the API), and a dashboard or an integration sends the same token with
 * every request. A signing key rotated out of the JWKS stops admitting its tokens once supabase-js fetches the
 * JWKS again: it keeps a copy for 10 minutes (JWKS_TTL), so within 11 minutes with this cache. Only
 * tokens signed with an asymmetric key are kept: for a shared-secret (HS*) token supabase-js asks the Auth
 * server instead (getUser), which also notices a signed-out session or a banned user, and a cache would
 * hide that for the minute.
 */
const verified = new Map<string, { user: VerifiedUser; until: number }>();
const verifiedFor = 60_000;
const maxVerified = 10_000;

/** Why a token was not admitted, said to its caller: every reason names only what the token itself claims. */
export interface RefusedToken {
  refused: string;
}

/**
 * Verifies a Supabase access token with supabase-js against the project's JWKS (cached by the library).
 * getClaims checks the signature and expiry; issuer and audience are ours to check. A token with a good
 * signature refused for its issuer or audience says so: locally that is a dev token minted for another port,
 * and "invalid" alone sent people looking at the token instead of at the two commands.
 */
export async function verifyAccessToken(token: string): Promise<VerifiedUser | RefusedToken> {
  const now = Date.now();
  const hit = verified.get(token);
  if (hit && hit.until > now) return hit.user;
  const c = config();
  // Outside the try: a missing key is our misconfiguration, to be reported, not a token to refuse.
  const auth = authClient();
  const invalid = { refused: 'Invalid or expired access token' };
  let result: Awaited<ReturnType<Auth['getClaims']>>;
  try {
    result = await auth.getClaims(token);
  } catch {
    return invalid; // malformed tokens throw before verification
  }
  const claims = result.data?.claims;
  // Supabase Auth down or rate limiting us (fetching the JWKS, or asked about a shared-secret token) is no verdict
  // on the token: a 503 tells the client to retry, a 401 would sign its user out.
  const status = (result.error as { status?: unknown } | null)?.status;
  if (result.error && (isAuthRetryableFetchError(result.error) || status === 429 || (typeof status === 'number' && status >= 500))) {
    throw unavailable('Could not verify the access token: Supabase Auth is not answering; retry shortly');
  }
  if (result.error || !claims) return invalid;
  const issuer = `${c.supabaseUrl}/auth/v1`;
  if (claims.iss !== issuer) return { refused: `Access token issued by ${String(claims.iss)}, not by this deployment's auth (${issuer})` };
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audiences.includes(c.SUPABASE_JWT_AUDIENCE)) return { refused: `Access token is not for audience ${c.SUPABASE_JWT_AUDIENCE}` };
  const signedIn = signedInUserClaims.safeParse(claims);
  if (!signedIn.success) return { refused: 'Access token is not a signed-in user\'s with an email (anonymous, or a project key)' };
  const user: VerifiedUser = Object.freeze({ userId: signedIn.data.sub, email: signedIn.data.email.toLowerCase() });
  const until = Math.min(now + verifiedFor, typeof claims.exp === 'number' ? claims.exp * 1000 : now);
  if (until > now && signedAsymmetrically(token)) {
    if (verified.size >= maxVerified) verified.delete(verified.keys().next().value!);
    verified.set(token, { user, until });
  }
  return user;
}

/**
 * Supabase also signs tokens for anonymous sign-ins and for its own keys (anon, service_role): members are
 * keyed by user and invited by email, so only a signed-in user with an email may act. The user id becomes a
 * document id (memberships), so it must be one: Supabase's are UUIDs.
 */
const signedInUserClaims = z
  .object({ sub: documentId, email: z.string().trim().min(1), role: z.literal('authenticated'), is_anonymous: z.boolean().optional() })
  .refine((c) => c.is_anonymous !== true);

function signedAsymmetrically(token: string): boolean {
  try {
    const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { alg?: unknown };
    return typeof header.alg === 'string' && /^(ES|RS|PS|Ed)/.test(header.alg);
  } catch {
    return false;
  }
}
