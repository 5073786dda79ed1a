import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, type JsonWebKey } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { config } from '../../shared/config';
import { localJsonFile } from './local-secrets';

/**
 * The local stand-in for Supabase Auth's signing side: an ES256 key kept in ABP_DATA_DIR, served as a JWKS at
 * /auth/v1/.well-known/jwks.json exactly where Supabase serves it, and tokens shaped like Supabase access
 * tokens. Verification goes through the same supabase-js code as production.
 */
interface StoredKey {
  kid: string;
  privateJwk: JsonWebKey;
}

function key(): StoredKey {
  return localJsonFile<StoredKey>('dev-auth-key.json', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const privateJwk = privateKey.export({ format: 'jwk' });
    const kid = createHash('sha256').update(JSON.stringify(privateJwk)).digest('base64url').slice(0, 16);
    return { kid, privateJwk };
  });
}

export function devJwks(): { keys: JsonWebKey[] } {
  const { kid, privateJwk } = key();
  const pub = createPublicKey(createPrivateKey({ key: privateJwk, format: 'jwk' })).export({ format: 'jwk' });
  return { keys: [{ ...pub, kid, alg: 'ES256', use: 'sig', key_ops: ['verify'] }] };
}

/** Same email, same user id, every time: a UUID-shaped digest of the address. */
export function devUserId(email: string): string {
  const h = createHash('sha256').update(`abp-dev-user:${email.trim().toLowerCase()}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * The running local stack's auth base URL, kept beside the signing key by `npm start`: the issuer a dev token must
 * carry is the stack's own URL, which PORT and HOST change, and the token command is run without them.
 */
const runningStackFile = () => join(config().ABP_DATA_DIR, 'running-stack.json');

export function recordRunningStack(authBaseUrl: string): void {
  mkdirSync(config().ABP_DATA_DIR, { recursive: true });
  writeFileSync(runningStackFile(), JSON.stringify({ authBaseUrl }, null, 2));
}

/** The auth base URL `npm start` recorded last in this data directory; undefined if it never ran here. */
export function runningStackAuthBase(): string | undefined {
  try {
    const { authBaseUrl } = JSON.parse(readFileSync(runningStackFile(), 'utf8')) as { authBaseUrl?: unknown };
    return typeof authBaseUrl === 'string' ? authBaseUrl : undefined;
  } catch {
    return undefined;
  }
}

/** `issuerBase`: the auth base URL to sign for (default: this process's configured one). */
export function mintDevToken(email: string, opts: { ttlSeconds?: number; now?: number; issuerBase?: string } = {}): string {
  const { kid, privateJwk } = key();
  const c = config();
  const now = Math.floor((opts.now ?? Date.now()) / 1000);
  const normalized = email.trim().toLowerCase();
  const header = { alg: 'ES256', typ: 'JWT', kid };
  const payload = {
    iss: `${opts.issuerBase ?? c.supabaseUrl}/auth/v1`,
    aud: c.SUPABASE_JWT_AUDIENCE,
    sub: devUserId(normalized),
    email: normalized,
    role: 'authenticated',
    aal: 'aal1',
    session_id: devUserId(`session:${normalized}`),
    iat: now,
    exp: now + (opts.ttlSeconds ?? 24 * 3600),
  };
  const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc(header)}.${enc(payload)}`;
  const signature = sign('sha256', Buffer.from(input), { key: createPrivateKey({ key: privateJwk, format: 'jwk' }), dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}
