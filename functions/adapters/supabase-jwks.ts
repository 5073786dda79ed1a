import { z } from 'zod';
import { unavailable } from '../../shared/errors';

const jwk = z.looseObject({ kid: z.string().min(1), kty: z.string().min(1), key_ops: z.array(z.string()).default(['verify']) });
const jwksBody = z.object({ keys: z.array(jwk) });

/** A public key from the project's JWKS, as supabase-js's getClaims takes it (and imports it into WebCrypto). */
export type SigningKey = z.infer<typeof jwk>;

/**
 * The project's signing keys as last fetched from its JWKS, kept for `maxAgeMs`.
 *
 * Why not supabase-js's own copy: it refetches the JWKS for every token naming a key id it does not hold, then
 * asks Supabase Auth about the token's user (GET /user) when the key is not there either. Anyone could spend the
 * API's Supabase rate limit with made-up key ids that way. Here a key id absent from a set younger than `maxAgeMs`
 * is refused at once, and a key removed from the JWKS (rotated out, revoked) stops verifying once the set is
 * refetched. Supabase's edge keeps the JWKS up to 10 minutes too, which no client can shorten.
 *
 * When a refetch fails, a set younger than `staleForMs` is used as it was, so that an outage of Supabase Auth
 * does not sign everyone out; with no set that recent, the caller learns Supabase Auth is unavailable (503).
 */
export class SigningKeys {
  private keys = new Map<string, SigningKey>();
  private fetchedAt = Number.NEGATIVE_INFINITY;
  /** When a fetch was last tried and answered (or failed with a set to fall back on): the max age runs from it. */
  private checkedAt = Number.NEGATIVE_INFINITY;
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly fetchJwks: () => Promise<unknown>,
    private readonly opts: { maxAgeMs: number; staleForMs: number; now?: () => number },
  ) {}

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /**
   * Whether the set as last fetched lists this key id, without waiting for a fetch: for tokens verified a moment
   * ago. A set past its max age is refetched meanwhile, so that a dashboard sending only tokens verified a moment
   * ago still sees a key rotated out.
   */
  lists(kid: string): boolean {
    if (this.old()) this.refresh().catch(() => undefined);
    return this.keys.has(kid);
  }

  /** The key with this id, or undefined when the project does not publish one. Fetches at most once per max age. */
  async key(kid: string): Promise<SigningKey | undefined> {
    if (this.old()) await this.refresh();
    return this.keys.get(kid);
  }

  private old(): boolean {
    return this.now() - this.checkedAt >= this.opts.maxAgeMs;
  }

  private refresh(): Promise<void> {
    // One fetch for every request that finds the set old at the same time.
    this.inFlight ??= this.fetchOnce().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async fetchOnce(): Promise<void> {
    const startedAt = this.now();
    let body: z.infer<typeof jwksBody>;
    try {
      const parsed = jwksBody.safeParse(await this.fetchJwks());
      if (!parsed.success) throw new Error(`the JWKS is not a key set: ${parsed.error.issues[0]?.message ?? ''}`);
      body = parsed.data;
    } catch (err) {
      if (startedAt - this.fetchedAt < this.opts.staleForMs) {
        // Tried again after another max age, not by every request meanwhile (a hanging Supabase would hold each).
        this.checkedAt = startedAt;
        console.warn(JSON.stringify({ severity: 'WARNING', message: 'Supabase JWKS refetch failed; using the key set fetched earlier', ageMs: startedAt - this.fetchedAt, error: String(err) }));
        return;
      }
      throw unavailable('Could not verify the access token: Supabase Auth is not answering; retry shortly');
    }
    this.keys = new Map(body.keys.map((k) => [k.kid, k]));
    this.fetchedAt = this.checkedAt = startedAt;
  }
}
