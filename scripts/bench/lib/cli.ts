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
 * Strict parsing (no positionals, no unknown flags) of integer flags, given as --name N, boolean flags, and
 * switches: on/off settings with a default (which may depend on the machine), given as --name or --name 1 (on),
 * --no-name or --name 0 (off). --help / -h prints `usage` and exits 0 at once, before any flag is validated.
 */
export function parseFlags<I extends Record<string, IntFlag>, B extends string = never, S extends string = never>(
  argv: string[],
  usage: string,
  ints: I,
  bools: readonly B[] = [],
  switches: Readonly<Record<S, boolean>> = {} as Record<S, boolean>,
): { [K in keyof I]: number } & { [K in B]: boolean } & { [K in S]: boolean } {
  const { rest, values: switched } = takeSwitches(argv, Object.keys(switches) as S[]);
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [key, s] of Object.entries(ints)) options[s.flag ?? key] = { type: 'string' };
  for (const name of bools) options[name] = { type: 'boolean' };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: rest, strict: true, allowPositionals: false, options }) as { values: Record<string, string | boolean | undefined> });
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
  for (const name of Object.keys(switches) as S[]) flags[name] = switched[name] ?? switches[name];
  return flags as { [K in keyof I]: number } & { [K in B]: boolean } & { [K in S]: boolean };
}

/**
 * Takes the switches out of argv before parseArgs sees it: node:util's parseArgs has no negated options
 * before Node 20.16 and cannot give a flag an optional value, and a switch takes both. The last one wins.
 */
function takeSwitches<S extends string>(argv: string[], names: readonly S[]): { rest: string[]; values: Partial<Record<S, boolean>> } {
  const rest: string[] = [];
  const values: Partial<Record<S, boolean>> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      rest.push(...argv.slice(i)); // parseArgs rejects what follows as positionals
      break;
    }
    const m = /^--(no-)?([a-z0-9-]+)(?:=(.*))?$/.exec(arg);
    const name = m?.[2] as S | undefined;
    if (!m || !name || !names.includes(name)) {
      rest.push(arg);
      continue;
    }
    const next = argv[i + 1];
    let value = m[3];
    // A following word is the switch's value (nothing else may stand there: there are no positionals).
    if (value === undefined && !m[1] && next !== undefined && !next.startsWith('-')) {
      value = next;
      i++;
    }
    if (m[1] && value !== undefined) throw new UsageError(`--no-${name} takes no value`);
    if (value !== undefined && value !== '0' && value !== '1') throw new UsageError(`--${name} takes 0 or 1 (or use --${name} / --no-${name})`);
    values[name] = m[1] ? false : value !== '0';
  }
  return { rest, values };
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
