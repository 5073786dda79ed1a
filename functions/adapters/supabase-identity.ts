import { AuthClient, isAuthRetryableFetchError } from '@supabase/supabase-js';
import { z } from 'zod';
import { documentId } from '../../shared/domain/schemas';
import { config, supabaseAnonKey } from '../../shared/config';
import { ApiError, unavailable } from '../../shared/errors';
import { SigningKeys } from './supabase-jwks';

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

let signingKeys: SigningKeys | undefined;

/** The project's JWKS as this instance last fetched it (see SigningKeys for why not supabase-js's own copy). */
function projectSigningKeys(): SigningKeys {
  if (signingKeys) return signingKeys;
  const c = config();
  const key = supabaseAnonKey();
  const url = `${c.supabaseUrl}/auth/v1/.well-known/jwks.json`;
  signingKeys = new SigningKeys(
    async () => {
      const res = await fetch(url, { headers: { apikey: key }, signal: AbortSignal.timeout(5000) });
      if (!res.ok) throw new Error(`GET ${url} answered ${res.status}`);
      return res.json();
    },
    // Supabase Auth's own edge keeps the JWKS for 10 minutes: a copy that old is what any client may see.
    { maxAgeMs: c.SUPABASE_JWKS_MAX_AGE_SECONDS * 1000, staleForMs: 10 * 60_000 },
  );
  return signingKeys;
}

/**
 * Tokens verified lately, each until its expiry or for a minute, whichever is sooner. Verifying costs about
 * 0.6 ms of CPU per request (supabase-js imports the JWKS key into WebCrypto on every getClaims; measured in
 * the tracking benchmark's profile of the API), and a dashboard or an integration sends the same token with
 * every request. A token whose signing key has left the JWKS (as last fetched) is verified again, and refused. Only
 * tokens signed with an asymmetric key are kept: for a shared-secret (HS*) token supabase-js asks the Auth
 * server instead (getUser), which also notices a signed-out session or a banned user, and a cache would
 * hide that for the minute.
 */
const verified = new Map<string, { user: VerifiedUser; until: number; kid: string }>();
const verifiedFor = 60_000;
const maxVerified = 10_000;

/** Why a token was not admitted, said to its caller: every reason names only what the token itself claims. */
export interface RefusedToken {
  refused: string;
}

/**
 * Verifies a Supabase access token with supabase-js against the project's JWKS (as SigningKeys holds it).
 * getClaims checks the signature and expiry; issuer and audience are ours to check. A token with a good
 * signature refused for its issuer or audience says so: locally that is a dev token minted for another port,
 * and "invalid" alone sent people looking at the token instead of at the two commands.
 */
export async function verifyAccessToken(token: string): Promise<VerifiedUser | RefusedToken> {
  const now = Date.now();
  const hit = verified.get(token);
  if (hit && hit.until > now && projectSigningKeys().lists(hit.kid)) return hit.user;
  const c = config();
  // Outside the try: a missing key is our misconfiguration, to be reported, not a token to refuse.
  const auth = authClient();
  const invalid = { refused: 'Invalid or expired access token' };
  const signing = signingOf(token);
  // Neither a shared-secret token nor one naming a key (alg none, an algorithm Supabase does not sign with, an
  // asymmetric token without a kid): refused here, since supabase-js would ask Supabase about it, twice.
  if (!signing) return invalid;
  const kid = signing === 'shared-secret' ? undefined : signing.kid;
  let result: Awaited<ReturnType<Auth['getClaims']>>;
  try {
    // An asymmetric token is checked against the key we hold, or refused without asking Supabase about it.
    // Shared-secret tokens are left to supabase-js, which asks Supabase Auth.
    const key = kid === undefined ? undefined : await projectSigningKeys().key(kid);
    if (kid !== undefined && !key) return invalid;
    result = await auth.getClaims(token, key ? { jwks: { keys: [key] } } : {});
  } catch (err) {
    if (err instanceof ApiError) throw err;
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
  if (until > now && kid !== undefined) {
    if (verified.size >= maxVerified) verified.delete(verified.keys().next().value!);
    verified.set(token, { user, until, kid });
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

/**
 * How a token says it was signed: with the project's shared secret (HS256, Supabase's legacy JWT secret), or with
 * one of its asymmetric keys (ES256 or RS256, as Supabase's signing keys are) named by kid; undefined for anything
 * else, or a header that does not parse.
 */
function signingOf(token: string): 'shared-secret' | { kid: string } | undefined {
  try {
    const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString()) as { alg?: unknown; kid?: unknown };
    if (header.alg === 'HS256') return 'shared-secret';
    if (header.alg !== 'ES256' && header.alg !== 'RS256') return undefined;
    return typeof header.kid === 'string' && header.kid !== '' ? { kid: header.kid } : undefined;
  } catch {
    return undefined;
  }
}
