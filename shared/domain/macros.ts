/** Destination URL macros. Values are URL-encoded, so a macro can never change the URL's host or scheme. */
export const macroNames = ['click_id', 'sub1', 'sub2', 'sub3', 'sub4', 'sub5', 'affiliate_id', 'campaign_id'] as const;
export type MacroName = (typeof macroNames)[number];

const known = new Set<string>(macroNames);

export function unknownMacros(template: string): string[] {
  return [...template.matchAll(/\{([a-z0-9_]+)\}/g)].map((m) => m[1]!).filter((n) => !known.has(n)).map((n) => `{${n}}`);
}

/** A missing or null value fills in as an empty string. */
export function fillMacros(template: string, values: Partial<Record<MacroName, string | null>>): string {
  return template.replace(/\{([a-z0-9_]+)\}/g, (whole, name: string) =>
    known.has(name) ? encodeURIComponent(values[name as MacroName] ?? '') : whole,
  );
}
