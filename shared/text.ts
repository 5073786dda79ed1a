/** A UTF-16 surrogate standing alone: in a `u` regex a valid pair is one code point, so only a lone half matches. */
const loneSurrogate = /\p{Cs}/u;

/**
 * Where `value` holds a string that is not text: one with a lone surrogate, which JSON can carry (`"\ud800"`) but
 * UTF-8 cannot, so Firestore refuses to store it and the request would fail with a 500 after it was accepted.
 * Answers the field's path (keys included), or undefined when every string is text.
 */
export function illFormedTextAt(value: unknown, path: readonly string[] = []): string[] | undefined {
  // Depth first with a stack of our own, not by recursion: 16 KB of `[` nest deeper than the call stack goes. Each
  // entry points at its parent, so the path is spelled out only for the string found.
  interface Step { value: unknown; key?: string; parent?: Step }
  const pathTo = (step: Step | undefined, key?: string): string[] => {
    const keys = key === undefined ? [] : [key];
    for (let s = step; s?.key !== undefined; s = s.parent) keys.push(s.key);
    return [...path, ...keys.reverse()];
  };
  const pending: Step[] = [{ value }];
  for (let step = pending.pop(); step; step = pending.pop()) {
    if (typeof step.value === 'string') {
      if (loneSurrogate.test(step.value)) return pathTo(step);
      continue;
    }
    if (step.value === null || typeof step.value !== 'object') continue;
    const entries = Object.entries(step.value);
    for (const [key] of entries) if (loneSurrogate.test(key)) return pathTo(step, key);
    for (let i = entries.length - 1; i >= 0; i--) pending.push({ value: entries[i]![1], key: entries[i]![0], parent: step });
  }
  return undefined;
}

export const illFormedTextMessage = 'is not valid text: it holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair)';
