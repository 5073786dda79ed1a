import { createHmac, randomFillSync, timingSafeEqual } from 'node:crypto';

/**
 * Click ids are minted by the click function and signed, so the postback path can tell a forged or
 * mistyped id from a real one without a lookup, and can attribute a conversion whose click has not been
 * processed yet: the id itself carries the link and the click time.
 *
 *   {linkId}.{clickTime base36 ms}.{random}.{signature}
 *
 * {random} is 8 base64url characters, followed by `b` when the click was recorded as a bot's (a crawler, a
 * link preview, a HEAD request): a postback the state worker handles before that click still knows it came
 * from one, and the flag is signed like the rest.
 */
const sigLength = 16; // 96 bits of HMAC-SHA256, base64url

function signature(key: string, payload: string): string {
  return createHmac('sha256', key).update(payload).digest('base64url').slice(0, sigLength);
}

// Random bytes drawn from a pool refilled 4 KiB at a time: one randomBytes call per click cost more than the
// rest of minting (it showed in the click function's profile). The bytes are as random; the pool is private.
const poolSize = 4096;
const pool = Buffer.alloc(poolSize);
let poolOffset = poolSize;

function random6(): string {
  if (poolOffset + 6 > poolSize) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const s = pool.toString('base64url', poolOffset, poolOffset + 6);
  poolOffset += 6;
  return s;
}

export function mintClickId(key: string, linkId: string, clickedAt: number, bot = false): string {
  const payload = `${linkId}.${clickedAt.toString(36)}.${random6()}${bot ? 'b' : ''}`;
  return `${payload}.${signature(key, payload)}`;
}

export interface ClickIdParts {
  linkId: string;
  clickedAt: number;
  /** The click was recorded as a bot's. */
  bot: boolean;
}

/** The link and time a click id carries, or undefined when it was not minted with this key. */
export function verifyClickId(key: string, clickId: string): ClickIdParts | undefined {
  if (clickId.length > 200) return undefined;
  const parts = clickId.split('.');
  if (parts.length !== 4) return undefined;
  const [linkId, time, random, sig] = parts as [string, string, string, string];
  const expected = Buffer.from(signature(key, parts.slice(0, 3).join('.')));
  const given = Buffer.from(sig);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  const clickedAt = parseInt(time, 36);
  if (!Number.isFinite(clickedAt)) return undefined;
  return { linkId, clickedAt, bot: random.length === 9 && random.endsWith('b') };
}
