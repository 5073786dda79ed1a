/**
 * `npm run build`: bundles each Cloud Function on its own with esbuild, so a cold start loads only the code that
 * function needs. For every entry point in infra/entries.ts it writes
 *
 *   dist/functions/<name>/index.js       one minified CommonJS file (node22)
 *   dist/functions/<name>/package.json   "main": "index.js" and only the dependencies that must stay external
 *   dist/functions/<name>/package-lock.json  those dependencies and everything they need, at the root lock's versions
 *   dist/sourcemaps/<name>/index.js.map  kept out of the upload, for decoding production stack traces
 *
 * The cdktf app zips each dist/functions/<name> and uploads it. Externals:
 *   - @google-cloud/functions-framework: Cloud Functions' Node.js buildpack installs it and runs the target from
 *     it; the bundle must `require` that same copy, or its registrations would land in a second, unused registry.
 *     It is listed with the exact installed version, and the bundle's lockfile pins what it needs in turn (express,
 *     body-parser, cloudevents …) to the versions of the root package-lock.json: without one the buildpack would
 *     resolve those ranges afresh on every deploy, and functions/framework-errors.ts patches the express it finds
 *     there, tested only against the locked copy.
 *   - @duckdb/node-api: a native module the analytics adapter loads lazily only when ANALYTICS_BACKEND=duckdb
 *     (local development). Production uses BigQuery, so it is neither bundled nor listed.
 * A missing entry file fails the build with its name; nothing is skipped.
 */
import { build, type Metafile } from 'esbuild';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { bundleDir, bundleFiles, defaultBundleRoot, functionEntries, functionKeys, kebab, repoRoot, type FunctionKey } from '../infra/entries';
import { functionNames } from '../shared/names';

/** Runtime dependencies the buildpack installs from each bundle's package.json. */
export const listedExternals = ['@google-cloud/functions-framework'] as const;
/** Never bundled, never listed: loaded only on code paths production does not take. */
export const unlistedExternals = ['@duckdb/node-api'] as const;

export interface BuildOptions {
  /** Directory receiving one sub-directory per function (default dist/functions). */
  outDir?: string;
  /** Directory receiving the source maps (default: `sourcemaps` beside outDir). */
  sourcemapDir?: string;
  /** Only these functions (default: all). */
  only?: FunctionKey[];
  /** Entry files relative to the repository root (default: infra/entries.ts); tests override it. */
  entries?: Partial<Record<FunctionKey, string>>;
  quiet?: boolean;
}

export interface BuiltFunction {
  key: FunctionKey;
  dir: string;
  bytes: number;
  /** Source files (repository-relative) that ended up in the bundle. */
  inputs: string[];
}

function installedVersion(pkg: string): string {
  const file = join(repoRoot, 'node_modules', pkg, 'package.json');
  const { version } = JSON.parse(readFileSync(file, 'utf8')) as { version?: string };
  if (!version) throw new Error(`Cannot read the installed version of ${pkg} from ${file}`);
  return version;
}

/** An entry of a lockfile's `packages` (lockfileVersion 3), as npm writes it; only the fields read here are named. */
export interface LockEntry {
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  dev?: boolean;
  optional?: boolean;
  devOptional?: boolean;
  peer?: boolean;
  [field: string]: unknown;
}

export interface Lockfile {
  name: string;
  version: string;
  lockfileVersion: 3;
  requires: true;
  packages: Record<string, LockEntry>;
}

export function readRootLock(): Lockfile {
  const lock = JSON.parse(readFileSync(join(repoRoot, 'package-lock.json'), 'utf8')) as Lockfile;
  if (lock.lockfileVersion !== 3) throw new Error(`package-lock.json has lockfileVersion ${String(lock.lockfileVersion)}; the bundles' locks are derived from a version 3 lock (npm 9 or later)`);
  return lock;
}

/**
 * Where Node finds `name` when `from` requires it (`from` a lock path, '' for the root): in from's own node_modules,
 * then in each enclosing one up to the top, the first that has it.
 */
function lockPathOf(packages: Record<string, LockEntry>, from: string, name: string): string | undefined {
  for (let base = from; ; ) {
    const candidate = `${base ? `${base}/` : ''}node_modules/${name}`;
    if (packages[candidate]) return candidate;
    if (!base) return undefined;
    const parent = base.lastIndexOf('/node_modules/');
    base = parent < 0 ? '' : base.slice(0, parent);
  }
}

/**
 * The lockfile of a bundle whose package.json lists `dependencies`: the packages they need, transitively, each
 * entry copied from the root lock at the same node_modules path, so the buildpack's `npm ci` installs the very tree
 * the tests ran against. Optional peers are left out, as npm leaves them uninstalled, and so is an optional
 * dependency the root lock lacks, as npm skips it. npm's dev/optional/peer flags describe how the root reaches a
 * package, so they are worked out again from the bundle's root.
 */
export function bundleLockfile(root: Lockfile, pkg: { name: string; version: string; dependencies: Record<string, string> }): Lockfile {
  const packages = root.packages;
  interface Edge { to: string; optional: boolean; peer: boolean }
  const edges = new Map<string, Edge[]>();
  const edgesOf = (from: string, entry: Pick<LockEntry, 'dependencies' | 'optionalDependencies' | 'peerDependencies' | 'peerDependenciesMeta'>): Edge[] => {
    const out: Edge[] = [];
    const add = (deps: Record<string, string> | undefined, optional: boolean, peer: boolean) => {
      for (const name of Object.keys(deps ?? {})) {
        if (peer && entry.peerDependenciesMeta?.[name]?.optional) continue;
        const to = lockPathOf(packages, from, name);
        if (to) out.push({ to, optional, peer });
        else if (!optional) throw new Error(`package-lock.json has no ${name} for ${from || pkg.name}; run \`npm install\` so that the lock is complete, then build again`);
      }
    };
    add(entry.dependencies, false, false);
    add(entry.optionalDependencies, true, false);
    add(entry.peerDependencies, false, true);
    return out;
  };

  // Each flag holds while every path from the root to the package crosses an edge of its kind (npm's calcDepFlags).
  const flags = new Map<string, { optional: boolean; peer: boolean }>();
  const queue: [string, { optional: boolean; peer: boolean }][] = edgesOf('', pkg).map((e) => [e.to, { optional: e.optional, peer: e.peer }]);
  for (let next = queue.shift(); next; next = queue.shift()) {
    const [path, reached] = next;
    const had = flags.get(path);
    const now = had ? { optional: had.optional && reached.optional, peer: had.peer && reached.peer } : reached;
    if (had && had.optional === now.optional && had.peer === now.peer) continue;
    flags.set(path, now);
    if (!edges.has(path)) edges.set(path, edgesOf(path, packages[path]!));
    for (const e of edges.get(path)!) queue.push([e.to, { optional: now.optional || e.optional, peer: now.peer || e.peer }]);
  }

  const out: Record<string, LockEntry> = { '': { name: pkg.name, version: pkg.version, dependencies: pkg.dependencies } };
  // In the root lock's order, which is npm's.
  for (const [path, entry] of Object.entries(packages)) {
    const f = flags.get(path);
    if (!f) continue;
    const { dev: _dev, optional: _optional, devOptional: _devOptional, peer: _peer, ...rest } = entry;
    out[path] = { ...rest, ...(f.optional ? { optional: true } : {}), ...(f.peer ? { peer: true } : {}) };
  }
  return { name: pkg.name, version: pkg.version, lockfileVersion: 3, requires: true, packages: out };
}

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

export async function buildFunctions(options: BuildOptions = {}): Promise<BuiltFunction[]> {
  const outDir = resolve(options.outDir ?? defaultBundleRoot);
  const sourcemapDir = resolve(options.sourcemapDir ?? join(outDir, '..', 'sourcemaps'));
  const keys = options.only ?? functionKeys;
  const entries = { ...functionEntries, ...options.entries };

  const missing = keys.filter((k) => !existsSync(join(repoRoot, entries[k])));
  if (missing.length) {
    throw new Error(
      `Cannot build: entry file(s) missing:\n${missing.map((k) => `  ${functionNames[k]}: ${entries[k]}`).join('\n')}\n` +
        'Every deployed function needs its entry file (see infra/entries.ts); none is skipped.',
    );
  }

  const rootLock = readRootLock();
  const dependencies = Object.fromEntries(
    listedExternals.map((p) => {
      const locked = rootLock.packages[`node_modules/${p}`]?.version;
      const installed = installedVersion(p);
      // The bundle's lock says what the buildpack installs; node_modules is what the tests ran: they must agree.
      if (locked !== installed) throw new Error(`${p} is ${installed} in node_modules but ${String(locked)} in package-lock.json; run \`npm ci\`, then build again`);
      return [p, installed];
    }),
  );
  const results: BuiltFunction[] = [];
  // One at a time: each build already uses every core, and the output stays in a stable order.
  for (const key of keys) {
    const dir = bundleDir(outDir, key);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const result = await build({
      absWorkingDir: repoRoot,
      entryPoints: [entries[key]],
      bundle: true,
      platform: 'node',
      target: 'node22',
      format: 'cjs',
      minify: true,
      sourcemap: 'external',
      legalComments: 'none',
      external: [...listedExternals, ...unlistedExternals],
      outfile: join(dir, 'index.js'),
      metafile: true,
      write: false,
      logLevel: 'warning',
    });
    for (const file of result.outputFiles) {
      const target = file.path.endsWith('.map') ? join(sourcemapDir, functionNames[key], 'index.js.map') : file.path;
      mkdirSync(join(target, '..'), { recursive: true });
      writeFileSync(target, file.contents);
    }
    const pkg = {
      name: `abp-${kebab(functionNames[key])}`,
      version: '0.0.0',
      private: true,
      description: `ABP Cloud Function ${functionNames[key]} (bundled from ${entries[key]} by scripts/build.ts)`,
      main: 'index.js',
      dependencies,
    };
    writeFileSync(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
    writeFileSync(join(dir, 'package-lock.json'), `${JSON.stringify(bundleLockfile(rootLock, pkg), null, 2)}\n`);
    // The zip cdktf uploads stores each file's time: a fixed one makes an unchanged bundle the same bytes, so that
    // Terraform, which replaces a source object whose MD5 differs from the local file's, leaves it alone.
    for (const file of bundleFiles) utimesSync(join(dir, file), bundleTime, bundleTime);
    utimesSync(dir, bundleTime, bundleTime);
    const bytes = statSync(join(dir, 'index.js')).size;
    results.push({ key, dir, bytes, inputs: inputsOf(result.metafile) });
    if (!options.quiet) console.log(`  ${functionNames[key].padEnd(16)} ${kib(bytes).padStart(12)}  ${relative(repoRoot, dir)}/index.js`);
  }
  return results;
}

/** The earliest time a zip entry can hold (1980-01-01 UTC), for every file of every bundle. */
const bundleTime = new Date(Date.UTC(1980, 0, 1));

function inputsOf(metafile: Metafile | undefined): string[] {
  return Object.keys(metafile?.inputs ?? {}).sort();
}

if (require.main === module) {
  const only = process.argv.slice(2);
  const byName = new Map(functionKeys.map((k) => [functionNames[k] as string, k]));
  const unknown = only.filter((n) => !byName.has(n));
  if (unknown.length) {
    console.error(`Unknown function(s): ${unknown.join(', ')}. Known: ${[...byName.keys()].join(', ')}`);
    process.exit(2);
  }
  console.log('Bundling Cloud Functions (esbuild, node22, cjs, minified):');
  buildFunctions({ only: only.length ? only.map((n) => byName.get(n)!) : undefined }).then(
    (built) => console.log(`Built ${built.length} function(s), ${kib(built.reduce((s, b) => s + b.bytes, 0))} in all.`),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
