/** A UTF-16 surrogate standing alone: in a `u` regex a valid pair is one code point, so only a lone half matches. */
const loneSurrogate = /\p{Cs}/u;

/**
 * Where `value` holds a string that is not text: one with a lone surrogate, which JSON can carry (`"\ud800"`) but
 * UTF-8 cannot, so Firestore refuses to store it and the request would fail with a 500 after it was accepted.
 * Answers the field's path (keys included), or undefined when every string is text.
 */
export function illFormedTextAt(value: unknown, path: readonly string[] = []): string[] | undefined {
  if (typeof value === 'string') return loneSurrogate.test(value) ? [...path] : undefined;
  if (value === null || typeof value !== 'object') return undefined;
  for (const [key, inner] of Object.entries(value)) {
    if (loneSurrogate.test(key)) return [...path, key];
    const found = illFormedTextAt(inner, [...path, key]);
    if (found) return found;
  }
  return undefined;
}

export const illFormedTextMessage = 'is not valid text: it holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair)';
