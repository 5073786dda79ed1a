import { parseArgs } from 'node:util';

/**
 * The command-line scaffolding the benchmarks share, so that every one of them takes its flags, answers --help,
 * rejects a bad flag (exit 2) and reports a failure (exit 1) or Ctrl-C (exit 130) the same way.
 */

/** A bad flag: main's caller prints the message and the usage and exits 2. */
export class UsageError extends Error {}

/** A non-negative integer flag. `flag` is the command-line name when it differs from the key (e.g. camelCase keys). */
export interface IntFlag {
  default: number;
  min: number;
  max: number;
  flag?: string;
}

/**
 * Strict parsing (no positionals, no unknown flags) of integer flags, given as --name N, and boolean flags.
 * --help / -h prints `usage` and exits 0 at once, before any flag is validated.
 */
export function parseFlags<I extends Record<string, IntFlag>, B extends string = never>(
  argv: string[],
  usage: string,
  ints: I,
  bools: readonly B[] = [],
): { [K in keyof I]: number } & { [K in B]: boolean } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [key, s] of Object.entries(ints)) options[s.flag ?? key] = { type: 'string' };
  for (const name of bools) options[name] = { type: 'boolean' };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options }) as { values: Record<string, string | boolean | undefined> });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const flags: Record<string, number | boolean> = {};
  for (const [key, s] of Object.entries(ints)) {
    const name = s.flag ?? key;
    const raw = values[name];
    const n = raw === undefined ? s.default : Number(raw);
    // The regex rejects what Number() would accept: '', ' 1', '1e3', '0x10', '-0'.
    if (typeof raw === 'boolean' || !/^\d+$/.test(raw ?? '0') || !Number.isInteger(n) || n < s.min || n > s.max) throw new UsageError(`--${name} must be an integer from ${s.min} to ${s.max}`);
    flags[key] = n;
  }
  for (const name of bools) flags[name] = values[name] === true;
  return flags as { [K in keyof I]: number } & { [K in B]: boolean };
}

/**
 * The exit code of a benchmark whose body threw: 130 after Ctrl-C (the interruption itself is what stopped it,
 * so there is nothing to report), otherwise 1, with the stack on stderr.
 */
export function failureCode(err: unknown, signal: AbortSignal): number {
  if (signal.aborted) return 130;
  console.error(`Benchmark failed: ${(err as Error).stack ?? String(err)}`);
  return 1;
}

/**
 * Parses the flags (an error prints the message and the usage and exits 2), runs `main` and exits with its code.
 * The explicit exit matters: emulator clients and sockets may keep the event loop alive after the stack stopped.
 */
export function runMain<F>(parse: (argv: string[]) => F, usage: string, main: (flags: F) => Promise<number>): void {
  const run = async (): Promise<number> => {
    let flags: F;
    try {
      flags = parse(process.argv.slice(2));
    } catch (err) {
      console.error(`${(err as Error).message}\n${usage}`);
      return 2;
    }
    return main(flags);
  };
  run().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
