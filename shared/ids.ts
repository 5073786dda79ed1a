import { createHash, randomBytes } from 'node:crypto';

/**
 * Ids sort newest first: a fixed-width base32 count of milliseconds until year 3084, then randomness. Lists
 * ordered by ascending document id (Firestore cannot scan keys descending) come out newest first without
 * another index, and a cursor is just the last id.
 */
const alphabet = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

function base32(bytes: Uint8Array, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += alphabet[bytes[i % bytes.length]! % 32];
  return out;
}

const timeSpan = 32 ** 9 - 1;

function timePart(ms: number): string {
  let out = '';
  let t = timeSpan - ms;
  for (let i = 0; i < 9; i++) {
    out = alphabet[t % 32] + out;
    t = Math.floor(t / 32);
  }
  return out;
}

export function newId(prefix: string, now = Date.now()): string {
  return `${prefix}_${timePart(now)}${base32(randomBytes(10), 10)}`;
}

/** A deterministic id from parts, for writes that a retry must land on the same document. */
export function deterministicId(prefix: string, ...parts: string[]): string {
  const h = createHash('sha256').update(parts.join('\u0000')).digest();
  return `${prefix}_${base32(h, 24)}`;
}

/** Short, unguessable link ids keep tracking URLs short. The click function knows their shape (functions/tracking/click.ts). */
export function newLinkId(): string {
  return base32(randomBytes(12), 12);
}

export function newSecret(prefix: string): string {
  return `${prefix}_${randomBytes(24).toString('base64url')}`;
}
