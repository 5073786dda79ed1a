/**
 * `npm run build`: bundles each Cloud Function on its own with esbuild, so a cold start loads only the code that
 * function needs. For every entry point in infra/entries.ts it writes
 *
 *   dist/functions/<name>/index.js       one minified CommonJS file (node22)
 *   dist/functions/<name>/package.json   "main": "index.js" and only the dependencies that must stay external
 *   dist/sourcemaps/<name>/index.js.map  kept out of the upload, for decoding production stack traces
 *
 * The cdktf app zips each dist/functions/<name> and uploads it. Externals:
 *   - @google-cloud/functions-framework: Cloud Functions' Node.js buildpack installs it and runs the target from
 *     it; the bundle must `require` that same copy, or its registrations would land in a second, unused registry.
 *     It is listed with the exact installed version.
 *   - @duckdb/node-api: a native module the analytics adapter loads lazily only when ANALYTICS_BACKEND=duckdb
 *     (local development). Production uses BigQuery, so it is neither bundled nor listed.
 * A missing entry file fails the build with its name; nothing is skipped.
 */
import { build, type Metafile } from 'esbuild';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { bundleDir, defaultBundleRoot, functionEntries, functionKeys, kebab, repoRoot, type FunctionKey } from '../infra/entries';
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

  const dependencies = Object.fromEntries(listedExternals.map((p) => [p, installedVersion(p)]));
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
    // The zip cdktf uploads stores each file's time: a fixed one makes an unchanged bundle the same bytes, so that
    // Terraform, which replaces a source object whose MD5 differs from the local file's, leaves it alone.
    for (const path of [join(dir, 'index.js'), join(dir, 'package.json'), dir]) utimesSync(path, bundleTime, bundleTime);
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
