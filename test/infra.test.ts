/**
 * The infrastructure, checked on the synthesized Terraform JSON (cdktf's Testing.synth), plus the bundler it
 * deploys. Builds every function into a temp directory first (a few seconds), so the checks also see which
 * adapters each bundle really contains. Offline: no Google Cloud call is made, and the one `npm ci` (of a bundle,
 * from its lockfile) runs with --offline on the tarballs the root `npm ci` left in the npm cache.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Testing } from 'cdktf';
import { analyticsColumns } from '../shared/analytics/schema';
import { analyticsTables, collections, functionNames, localPaths, maxDeliveryAttempts, subscriptions, topics } from '../shared/names';
import { loadInfraConfig } from '../infra/config';
import { bundleFiles, functionKeys, kebab, repoRoot, snake, type FunctionKey } from '../infra/entries';
import { backupRetentionDays } from '../infra/firestore';
import { functionSpecs, secretNames } from '../infra/functions';
import { AbpStack, MissingBundleError } from '../infra/stack';
import { buildFunctions, bundleLockfile, readRootLock, type BuiltFunction, type LockEntry, type Lockfile } from '../scripts/build';

type Obj = Record<string, unknown>;
interface TfJson {
  resource: Record<string, Record<string, Obj>>;
  data?: Record<string, Record<string, Obj>>;
  output?: Record<string, Obj>;
}

const project = 'abp-test-project';
const domain = 'track.example.com';
const fakeSecrets = {
  STRIPE_SECRET_KEY: 'sk_live_FAKEFAKEFAKEdoNotLeak0123456789',
  STRIPE_WEBHOOK_SECRET: 'whsec_FAKEdoNotLeak0123456789',
  STRIPE_CONNECT_WEBHOOK_SECRET: 'whsec_FAKEconnectDoNotLeak0123456789',
  ABP_HASH_KEY: 'fake-hash-key-doNotLeak-0123456789',
  ABP_CLICK_SIGNING_KEY: 'fake-click-key-doNotLeak-0123456789',
  SUPABASE_SERVICE_ROLE_KEY: 'eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.doNotLeakSignature',
};

let workDir: string;
let bundleRoot: string;
let built: Map<FunctionKey, BuiltFunction>;
let plain: TfJson;
let plainText: string;
let withAlertEmail: TfJson;
let withAlertEmailText: string;
const savedEnv: Record<string, string | undefined> = {};

let apps = 0;
/** A cdktf Testing app whose scratch output directory is removed with the rest of the test's files. */
const testApp = () => Testing.app({ outdir: join(workDir, `app-${++apps}`) });

function synthesize(env: Record<string, string>): string {
  const stack = new AbpStack(testApp(), 'abp', loadInfraConfig({ ...process.env, ...env }));
  return Testing.synth(stack);
}

before(async () => {
  workDir = mkdtempSync(join(tmpdir(), 'abp-infra-test-'));
  bundleRoot = join(workDir, 'functions');
  built = new Map((await buildFunctions({ outDir: bundleRoot, quiet: true })).map((b) => [b.key, b]));
  // Secret values present in the environment while synthesizing must not end up in the JSON.
  for (const [k, v] of Object.entries(fakeSecrets)) {
    savedEnv[k] = process.env[k];
    process.env[k] = v;
  }
  // The required settings only (the tracking domain is one), then with the optional alert e-mail.
  plainText = synthesize({ ABP_PROJECT_ID: project, ABP_BUNDLE_DIR: bundleRoot, ABP_TRACKING_DOMAIN: domain });
  plain = JSON.parse(plainText) as TfJson;
  withAlertEmailText = synthesize({ ABP_PROJECT_ID: project, ABP_BUNDLE_DIR: bundleRoot, ABP_TRACKING_DOMAIN: domain, ABP_ALERT_EMAIL: 'ops@example.com' });
  withAlertEmail = JSON.parse(withAlertEmailText) as TfJson;
});

after(() => {
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  rmSync(workDir, { recursive: true, force: true });
});

// ---- helpers over the synthesized JSON ----

function resources(tf: TfJson, type: string): Record<string, Obj> {
  return tf.resource[type] ?? {};
}

function resource(tf: TfJson, type: string, id: string): Obj {
  const r = resources(tf, type)[id];
  assert.ok(r, `${type}.${id} exists`);
  return r;
}

function at(o: unknown, ...path: (string | number)[]): unknown {
  let cur: unknown = o;
  for (const p of path) cur = cur && typeof cur === 'object' ? (cur as Record<string | number, unknown>)[p] : undefined;
  return cur;
}

const ref = (type: string, id: string, attr: string) => `\${${type}.${id}.${attr}}`;
const fnId = (key: FunctionKey) => `fn_${snake(key)}`;
const fnUri = (key: FunctionKey) => ref('google_cloudfunctions2_function', fnId(key), 'service_config[0].uri');
const fnName = (key: FunctionKey) => ref('google_cloudfunctions2_function', fnId(key), 'name');
/** The Cloud Run service behind a function, which its invoker grants name (infra/cloud-functions.ts runServiceOf). */
const fnService = (key: FunctionKey) => ref('google_cloudfunctions2_function', fnId(key), 'service_config[0].service');
const saMember = (saId: string) => `serviceAccount:${ref('google_service_account', saId, 'email')}`;
const pubsubAgent = `serviceAccount:service-${ref('data.google_project', 'project', 'number')}@gcp-sa-pubsub.iam.gserviceaccount.com`;

/** Follows a `${type.id.attr}` reference to the referenced resource's attribute. */
function deref(tf: TfJson, value: unknown): unknown {
  const m = typeof value === 'string' ? /^\$\{([a-z0-9_]+)\.([A-Za-z0-9_-]+)\.([a-z_]+)\}$/.exec(value) : null;
  if (!m) return value;
  const target = resource(tf, m[1]!, m[2]!);
  // A topic's or subscription's id is known only once it exists (projects/P/topics/NAME): read its name.
  return m[3] === 'id' && (m[1] === 'google_pubsub_topic' || m[1] === 'google_pubsub_subscription') ? target.name : at(target, m[3]!);
}

const iamTypes = [
  'google_project_iam_member',
  'google_pubsub_topic_iam_member',
  'google_pubsub_subscription_iam_member',
  'google_secret_manager_secret_iam_member',
  'google_bigquery_table_iam_member',
  'google_bigquery_dataset_iam_member',
  'google_storage_bucket_iam_member',
  'google_service_account_iam_member',
  'google_cloud_run_v2_service_iam_member',
  'google_cloud_run_service_iam_member',
  'google_cloudfunctions2_function_iam_member',
];

/** Every grant held by a member, as "kind:target:role" strings. */
function grantsOf(tf: TfJson, member: string): string[] {
  const out: string[] = [];
  for (const type of iamTypes) {
    for (const r of Object.values(resources(tf, type))) {
      if (r.member !== member && !(Array.isArray(r.members) && r.members.includes(member))) continue;
      const role = String(r.role);
      switch (type) {
        case 'google_project_iam_member': out.push(`project:${role}`); break;
        case 'google_pubsub_topic_iam_member': out.push(`topic:${String(deref(tf, r.topic))}:${role}`); break;
        case 'google_pubsub_subscription_iam_member': out.push(`subscription:${String(deref(tf, r.subscription))}:${role}`); break;
        case 'google_secret_manager_secret_iam_member': {
          const secretResource = /^\$\{google_secret_manager_secret\.(\w+)\.id\}$/.exec(String(r.secret_id))?.[1];
          assert.ok(secretResource, `secret reference ${String(r.secret_id)}`);
          out.push(`secret:${String(resource(tf, 'google_secret_manager_secret', secretResource).secret_id)}:${role}`);
          break;
        }
        case 'google_bigquery_table_iam_member': out.push(`table:${String(deref(tf, r.table_id))}:${role}`); break;
        default: out.push(`${type}:${JSON.stringify(r)}`);
      }
    }
  }
  return out.sort();
}

function sourceFiles(dir: string): string[] {
  return readdirSync(join(repoRoot, dir), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => join(repoRoot, dir, f));
}

/** Where Node looks for `name` required from the package at lock path `from`: its node_modules, then each one up. */
function nodeLookup(packages: Record<string, unknown>, from: string, name: string): string | undefined {
  const parts = from ? from.split('/node_modules/') : [];
  for (let depth = parts.length; depth >= 0; depth--) {
    const candidate = [...parts.slice(0, depth), name].join('/node_modules/');
    const path = candidate.startsWith('node_modules/') ? candidate : `node_modules/${candidate}`;
    if (path in packages) return path;
  }
  return undefined;
}

/** Every package npm installed under dir, by lock path ("node_modules/a/node_modules/b"), with its version. */
function installedPackages(dir: string, prefix = ''): Map<string, string> {
  const out = new Map<string, string>();
  const modules = join(dir, prefix, 'node_modules');
  if (!existsSync(modules)) return out;
  for (const entry of readdirSync(modules)) {
    if (entry.startsWith('.')) continue;
    const names = entry.startsWith('@') ? readdirSync(join(modules, entry)).map((n) => `${entry}/${n}`) : [entry];
    for (const name of names) {
      const path = `${prefix ? `${prefix}/` : ''}node_modules/${name}`;
      out.set(path, (JSON.parse(readFileSync(join(dir, path, 'package.json'), 'utf8')) as { version: string }).version);
      for (const [nested, version] of installedPackages(dir, path)) out.set(nested, version);
    }
  }
  return out;
}

/**
 * Runs a postback bundle in `dir` on the Functions Framework that `cwd` and `env` lead Node to, and checks that a
 * body the framework cannot parse is answered in our JSON error shape: the final handler of
 * functions/framework-errors.ts landed on the Express copy the framework builds its app from.
 */
function assertAnswersBrokenJson(dir: string, cwd: string, env: Record<string, string>): void {
  const script = `
    require(${JSON.stringify(join(dir, 'index.js'))});
    const { getTestServer } = require('@google-cloud/functions-framework/testing');
    const server = getTestServer(${JSON.stringify(functionNames.postback)});
    server.listen(0, '127.0.0.1', async () => {
      const r = await fetch('http://127.0.0.1:' + server.address().port + '/postback', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"click_id":' });
      process.stdout.write(JSON.stringify({ status: r.status, type: r.headers.get('content-type'), body: await r.json() }));
      server.close();
    });`;
  const { NODE_PATH: _inherited, ...parentEnv } = process.env;
  const run = spawnSync(process.execPath, ['-e', script], {
    cwd,
    env: { ...parentEnv, ...env, METADATA_SERVER_DETECTION: 'none', GOOGLE_CLOUD_PROJECT: 'abp-bundle-test' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.equal(run.status, 0, run.stderr);
  const got = JSON.parse(run.stdout) as { status: number; type: string; body: { error: { code: string; message: string } } };
  assert.equal(got.status, 400);
  assert.match(got.type, /^application\/json/);
  assert.equal(got.body.error.code, 'bad_request');
  assert.match(got.body.error.message, /not valid JSON/);
}

// ---- the checks ----

describe('build (scripts/build.ts)', () => {
  it('bundles every function on its own with a minimal package.json', () => {
    const ff = JSON.parse(readFileSync(join(repoRoot, 'node_modules/@google-cloud/functions-framework/package.json'), 'utf8')) as { version: string };
    for (const key of functionKeys) {
      const dir = join(bundleRoot, functionNames[key]);
      assert.deepEqual(readdirSync(dir).sort(), ['index.js', 'package-lock.json', 'package.json'], `${dir} holds only the bundle, its package.json and its lockfile`);
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Obj;
      assert.equal(pkg.main, 'index.js');
      // The framework stays external (the buildpack runs the target from it) at the exact installed version;
      // the native DuckDB module is never needed in production, so it is not listed.
      assert.deepEqual(pkg.dependencies, { '@google-cloud/functions-framework': ff.version });
      const code = readFileSync(join(dir, 'index.js'), 'utf8');
      assert.match(code, /require\("@google-cloud\/functions-framework"\)/);
      assert.ok(built.get(key)!.inputs.length > 0);
    }
    // The files carry a fixed time, so the zip uploaded for an unchanged bundle is the same bytes: Terraform replaces a
    // source object whose local MD5 differs from the stored one, so a time that changed would replace all nine on
    // every apply after a build.
    for (const key of functionKeys) {
      for (const file of bundleFiles) assert.equal(statSync(join(bundleRoot, functionNames[key], file)).mtime.toISOString(), '1980-01-01T00:00:00.000Z', `${key}/${file}`);
    }
    // The click bundle carries none of the admin API, the analytics store or Stripe.
    const clickInputs = built.get('click')!.inputs.join('\n');
    assert.doesNotMatch(clickInputs, /functions\/api\/|adapters\/analytics|stripe/);
  });

  it('a deployed HTTP bundle answers a body the framework cannot parse in our JSON error shape', () => {
    // As the buildpack runs it: the bundle beside the framework it lists (resolved here through NODE_PATH), so
    // this checks that the final handler lands on the Express copy the framework itself builds its app from.
    assertAnswersBrokenJson(join(bundleRoot, functionNames.postback), workDir, { NODE_PATH: join(repoRoot, 'node_modules') });
  });

  it("each bundle's lockfile pins the packages its dependencies need, as the root lock has them", () => {
    const rootLock = readRootLock();
    const withoutFlags = ({ dev: _dev, optional: _optional, devOptional: _devOptional, peer: _peer, ...rest }: LockEntry) => rest;
    for (const key of functionKeys) {
      const dir = join(bundleRoot, functionNames[key]);
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string; version: string; dependencies: Record<string, string> };
      const lock = JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8')) as Lockfile;
      assert.equal(lock.lockfileVersion, 3);
      assert.deepEqual(lock.packages[''], { name: pkg.name, version: pkg.version, dependencies: pkg.dependencies }, `${key}: the lock's root is the package.json`);
      const paths = Object.keys(lock.packages).filter((p) => p);
      for (const path of paths) {
        const entry = lock.packages[path]!;
        assert.ok(rootLock.packages[path], `${key}: ${path} is where the root lock has it`);
        // Everything is needed at run time: a dev flag would let `npm ci --omit=dev` leave it out.
        assert.equal(entry.dev, undefined, `${key}: ${path}`);
        assert.deepEqual(withoutFlags(entry), withoutFlags(rootLock.packages[path]!), `${key}: ${path} as the root lock has it (version, integrity, dependencies …)`);
      }
      // Closed and minimal: walking from the root as Node resolves (nearest node_modules up the path) reaches
      // exactly the listed packages, each dependency found in the bundle where the root lock finds it.
      const reached = new Set<string>();
      const visit = (from: string, deps: Record<string, string>) => {
        for (const name of Object.keys(deps)) {
          const inBundle = nodeLookup(lock.packages, from, name);
          assert.ok(inBundle, `${key}: ${name}, needed by ${from || 'the bundle'}, is in its lock`);
          assert.equal(inBundle, nodeLookup(rootLock.packages, from, name), `${key}: ${name} for ${from || 'the bundle'} resolves as in the root lock`);
          if (reached.has(inBundle)) continue;
          reached.add(inBundle);
          const e = lock.packages[inBundle]!;
          const peers = Object.fromEntries(Object.entries(e.peerDependencies ?? {}).filter(([n]) => !e.peerDependenciesMeta?.[n]?.optional));
          visit(inBundle, { ...e.dependencies, ...e.optionalDependencies, ...peers });
        }
      };
      visit('', pkg.dependencies);
      assert.deepEqual([...reached].sort(), [...paths].sort(), `${key}: the lock lists exactly what its dependencies need`);
      // The copy functions/framework-errors.ts patches, at the version the tests ran it against.
      const express = JSON.parse(readFileSync(join(repoRoot, 'node_modules/express/package.json'), 'utf8')) as { version: string };
      assert.equal(lock.packages['node_modules/express']?.version, express.version);
    }
  });

  it('npm ci installs a bundle offline from its lockfile, the tree the tests ran, and the bundle answers on it', () => {
    // The CI's `npm ci` at the root has put every tarball in the npm cache, so this needs no network; it is what
    // the buildpack does with the uploaded bundle, minus the download.
    const dir = join(workDir, 'installed-postback');
    mkdirSync(dir);
    for (const file of bundleFiles) cpSync(join(bundleRoot, functionNames.postback, file), join(dir, file));
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) || k.toLowerCase() === 'npm_config_cache'));
    const npm = (...args: string[]) => spawnSync('npm', args, { cwd: dir, env, encoding: 'utf8', timeout: 120_000 });
    const ci = npm('ci', '--offline', '--ignore-scripts', '--no-audit', '--no-fund');
    assert.equal(ci.status, 0, `npm ci --offline failed (is the npm cache filled by a root \`npm ci\`?):\n${ci.stderr}`);
    const ls = npm('ls', '--all');
    assert.equal(ls.status, 0, `npm ls finds a missing, invalid or extraneous package:\n${ls.stdout}${ls.stderr}`);

    const lock = JSON.parse(readFileSync(join(dir, 'package-lock.json'), 'utf8')) as Lockfile;
    const installed = installedPackages(dir);
    assert.deepEqual([...installed.keys()].sort(), Object.keys(lock.packages).filter((p) => p).sort(), 'npm installed exactly what the lock lists');
    for (const [path, version] of installed) {
      assert.equal(version, lock.packages[path]!.version, path);
      // The same package at the same place as in the repository's node_modules, so Node resolves to the same copies.
      const tested = JSON.parse(readFileSync(join(repoRoot, path, 'package.json'), 'utf8')) as { version: string };
      assert.equal(version, tested.version, `${path}: the version the tests ran`);
    }
    // No NODE_PATH: the bundle finds the framework and its Express where the buildpack would put them.
    assertAnswersBrokenJson(dir, dir, {});
  });

  it('derives a lock the way Node resolves: nested copies, optional and peer flags from the bundle, optional peers left out', () => {
    const root: Lockfile = {
      name: 'root', version: '1.0.0', lockfileVersion: 3, requires: true,
      packages: {
        '': { name: 'root', version: '1.0.0', dependencies: { a: '1.0.0' }, devDependencies: { devtool: '1.0.0' } },
        'node_modules/a': {
          version: '1.0.0', integrity: 'sha512-a', license: 'MIT',
          dependencies: { b: '^2.0.0' }, optionalDependencies: { native: '1.0.0', 'other-platform': '1.0.0' },
          peerDependencies: { c: '1.0.0', 'opt-peer': '1.0.0' }, peerDependenciesMeta: { 'opt-peer': { optional: true } },
        },
        'node_modules/a/node_modules/b': { version: '2.0.0', integrity: 'sha512-b2', dependencies: { d: '1.0.0' } },
        // The hoisted b is devtool's, not a's.
        'node_modules/b': { version: '1.0.0', integrity: 'sha512-b1', dev: true },
        'node_modules/c': { version: '1.0.0', integrity: 'sha512-c', peer: true },
        // Reached from a's nested b, up the path; the root reaches it through devtool too, flagged for the root only.
        'node_modules/d': { version: '1.0.0', integrity: 'sha512-d', devOptional: true, engines: { node: '>=18' } },
        'node_modules/devtool': { version: '1.0.0', integrity: 'sha512-dt', dev: true, dependencies: { b: '1.0.0', d: '1.0.0' } },
        'node_modules/native': { version: '1.0.0', integrity: 'sha512-n', optional: true, os: ['linux'] },
        'node_modules/opt-peer': { version: '1.0.0', integrity: 'sha512-op', dev: true },
      },
    };
    const lock = bundleLockfile(root, { name: 'bundle', version: '0.0.0', dependencies: { a: '1.0.0' } });
    assert.deepEqual(lock.packages, {
      '': { name: 'bundle', version: '0.0.0', dependencies: { a: '1.0.0' } },
      'node_modules/a': root.packages['node_modules/a'],
      'node_modules/a/node_modules/b': root.packages['node_modules/a/node_modules/b'],
      'node_modules/c': { version: '1.0.0', integrity: 'sha512-c', peer: true },
      'node_modules/d': { version: '1.0.0', integrity: 'sha512-d', engines: { node: '>=18' } },
      'node_modules/native': { version: '1.0.0', integrity: 'sha512-n', optional: true, os: ['linux'] },
    });
    assert.throws(() => bundleLockfile(root, { name: 'bundle', version: '0.0.0', dependencies: { zz: '1.0.0' } }), /package-lock\.json has no zz for bundle/);
  });

  it('fails loudly, naming the function and file, when an entry file is missing', async () => {
    await assert.rejects(
      buildFunctions({ outDir: join(workDir, 'missing'), quiet: true, only: ['click'], entries: { click: 'functions/tracking/does-not-exist.ts' } }),
      /click: functions\/tracking\/does-not-exist\.ts/,
    );
  });

  it('synth refuses to run without bundles and says to run npm run build', () => {
    assert.throws(
      () => new AbpStack(testApp(), 'abp', loadInfraConfig({ ABP_BUNDLE_DIR: join(workDir, 'no-bundles'), ABP_TRACKING_DOMAIN: domain })),
      (err: unknown) => err instanceof MissingBundleError && /npm run build/.test(err.message) && err.message.includes(functionNames.click),
    );
  });

  it('synth takes a bundle built without its lockfile for a missing one', () => {
    // Deployed without a lock, the buildpack would resolve the framework's dependencies afresh.
    const stale = join(workDir, 'stale-bundles');
    for (const key of functionKeys) {
      mkdirSync(join(stale, functionNames[key]), { recursive: true });
      for (const file of ['index.js', 'package.json']) writeFileSync(join(stale, functionNames[key], file), '{}');
    }
    assert.throws(
      () => new AbpStack(testApp(), 'abp', loadInfraConfig({ ABP_BUNDLE_DIR: stale, ABP_TRACKING_DOMAIN: domain })),
      (err: unknown) => err instanceof MissingBundleError && /npm run build/.test(err.message) && functionKeys.every((k) => err.message.includes(functionNames[k])),
    );
  });
});

describe('functions', () => {
  it('every entry point is a Node 22 gen2 function built from its own uploaded bundle', () => {
    const fns = resources(plain, 'google_cloudfunctions2_function');
    assert.equal(Object.keys(fns).length, functionKeys.length);
    for (const key of functionKeys) {
      const fn = resource(plain, 'google_cloudfunctions2_function', fnId(key));
      assert.equal(at(fn, 'build_config', 'runtime'), 'nodejs22');
      assert.equal(at(fn, 'build_config', 'entry_point'), functionNames[key]);
      assert.equal(at(fn, 'event_trigger'), undefined, `${key}: Pub/Sub reaches workers through explicit push subscriptions`);
      const objectRef = at(fn, 'build_config', 'source', 'storage_source', 'object');
      assert.equal(objectRef, ref('google_storage_bucket_object', `source_${snake(key)}`, 'name'));
      const object = resource(plain, 'google_storage_bucket_object', `source_${snake(key)}`);
      const hash = /-([0-9A-F]{32})\.zip$/.exec(String(object.name))?.[1];
      assert.ok(hash, `${key}: the object name carries the bundle hash`);
      assert.equal(object.source, `assets/bundle_${snake(key)}/${hash}/archive.zip`);
      assert.equal(at(fn, 'service_config', 'environment_variables', 'ABP_ENV'), 'production');
      assert.equal(at(fn, 'service_config', 'environment_variables', 'ANALYTICS_BACKEND'), 'bigquery');
    }
  });

  it('keeps the click function warm with high concurrency', () => {
    const click = resource(plain, 'google_cloudfunctions2_function', fnId('click'));
    assert.ok(Number(at(click, 'service_config', 'min_instance_count')) >= 1);
    assert.ok(Number(at(click, 'service_config', 'max_instance_request_concurrency')) >= 50);
    assert.equal(at(click, 'service_config', 'environment_variables', 'XFF_TRUSTED_HOPS'), '2');
    // One vCPU: V8's parallel GC helpers would only take turns with the thread serving clicks.
    assert.equal(at(click, 'service_config', 'available_cpu'), '1');
    assert.equal(at(click, 'service_config', 'environment_variables', 'NODE_OPTIONS'), '--v8-pool-size=1');
  });

  it('gives every function NODE_OPTIONS that node starts with (a flag it does not take stops every instance)', () => {
    const fns = Object.values(resources(plain, 'google_cloudfunctions2_function'));
    assert.ok(fns.length >= 9);
    for (const fn of fns) {
      const options = at(fn, 'service_config', 'environment_variables', 'NODE_OPTIONS');
      if (options === undefined) continue;
      const run = spawnSync(process.execPath, ['-e', '0'], { env: { PATH: process.env.PATH!, NODE_OPTIONS: String(options) }, encoding: 'utf8' });
      assert.equal(run.status, 0, `NODE_OPTIONS=${String(options)}: ${run.stderr}`);
    }
  });

  it('HTTP functions are public or scheduler-only; workers are pushed to by Pub/Sub with OIDC', () => {
    const specs = functionSpecs({ ABP_CLICK_MIN_INSTANCES: 1 });
    const invokers = Object.values(resources(plain, 'google_cloud_run_v2_service_iam_member'));
    const invokersOf = (key: FunctionKey) => invokers.filter((i) => i.name === fnService(key) && i.role === 'roles/run.invoker').map((i) => String(i.member));
    const subs = Object.values(resources(plain, 'google_pubsub_subscription'));
    const jobs = Object.values(resources(plain, 'google_cloud_scheduler_job'));
    for (const key of functionKeys) {
      const trigger = specs[key].trigger;
      const members = invokersOf(key);
      if (trigger.kind === 'http' && trigger.access === 'public') {
        assert.deepEqual(members, ['allUsers'], `${key} is public`);
      } else if (trigger.kind === 'http') {
        assert.deepEqual(members, [saMember('sa_scheduler')], `${key} only by the scheduler`);
        const job = jobs.find((j) => at(j, 'http_target', 'uri') === fnUri(key));
        assert.ok(job, `${key} has a scheduler job`);
        assert.deepEqual(at(job, 'http_target', 'oidc_token'), { service_account_email: ref('google_service_account', 'sa_scheduler', 'email'), audience: fnUri(key) });
        assert.equal(job.schedule, trigger.schedule);
      } else {
        const pusher = `push_${snake(key)}`;
        assert.deepEqual(members, [saMember(pusher)], `${key} only by its push identity`);
        const sub = subs.find((s) => s.name === trigger.subscription);
        assert.ok(sub, `${key}: subscription ${trigger.subscription}`);
        assert.equal(sub.topic, ref('google_pubsub_topic', 'tracking_events', 'id'));
        assert.equal(at(sub, 'push_config', 'push_endpoint'), `${fnUri(key)}/projects/${project}/topics/${topics.trackingEvents}`);
        assert.deepEqual(at(sub, 'push_config', 'oidc_token'), { service_account_email: ref('google_service_account', pusher, 'email'), audience: fnUri(key) });
        assert.equal(at(resource(plain, 'google_cloudfunctions2_function', fnId(key)), 'service_config', 'ingress_settings'), 'ALLOW_INTERNAL_ONLY');
      }
    }
    assert.deepEqual(jobs.map((j) => j.schedule).sort(), ['*/15 * * * *', '0 * * * *']);
  });
});

describe('Pub/Sub', () => {
  it('has every topic the code publishes to and every subscription the local stack provisions', () => {
    const topicNames = Object.values(resources(plain, 'google_pubsub_topic')).map((t) => t.name);
    const used = new Set<string>();
    for (const file of [...sourceFiles('functions'), join(repoRoot, 'scripts/local/pubsub-setup.ts')]) {
      for (const m of readFileSync(file, 'utf8').matchAll(/\btopics\.(\w+)/g)) used.add(m[1]!);
    }
    assert.ok(used.has('trackingEvents'));
    for (const t of used) assert.ok(topicNames.includes(topics[t as keyof typeof topics]), `topic ${t}`);
    const subNames = Object.values(resources(plain, 'google_pubsub_subscription')).map((s) => s.name).sort();
    assert.deepEqual(subNames, Object.values(subscriptions).sort());
  });

  it('grants on a function, topic or subscription follow it when it is replaced', () => {
    // Each names its target by what is known only once the target exists, so Terraform replaces the grant with it;
    // by a fixed name, the plan would keep the grant while the new target starts without it (403s, no dead letters).
    for (const r of Object.values(resources(plain, 'google_cloud_run_v2_service_iam_member'))) assert.match(String(r.name), /^\$\{google_cloudfunctions2_function\.\w+\.service_config\[0\]\.service\}$/);
    for (const r of Object.values(resources(plain, 'google_pubsub_topic_iam_member'))) assert.match(String(r.topic), /^\$\{google_pubsub_topic\.\w+\.id\}$/);
    for (const r of Object.values(resources(plain, 'google_pubsub_subscription_iam_member'))) assert.match(String(r.subscription), /^\$\{google_pubsub_subscription\.\w+\.id\}$/);
  });

  it('worker subscriptions retry and dead-letter after maxDeliveryAttempts; the service agent may dead-letter', () => {
    for (const name of [subscriptions.stateWriter, subscriptions.analyticsWriter]) {
      const [id, sub] = Object.entries(resources(plain, 'google_pubsub_subscription')).find(([, s]) => s.name === name)!;
      assert.deepEqual(sub.dead_letter_policy, { dead_letter_topic: ref('google_pubsub_topic', 'tracking_dead_letter', 'id'), max_delivery_attempts: maxDeliveryAttempts });
      // About 15 minutes of failures (60 + 120 + 240 + 480 s between the 5 attempts) before an event is dead-lettered,
      // so a few minutes of Firestore or BigQuery outage delays events rather than dead-lettering them all.
      assert.deepEqual(sub.retry_policy, { minimum_backoff: '60s', maximum_backoff: '600s' }, `${name}'s retry policy`);
      assert.equal(at(sub, 'expiration_policy', 'ttl'), '', `${name} never expires`);
      assert.ok(grantsOf(plain, pubsubAgent).includes(`subscription:${name}:roles/pubsub.subscriber`), `agent subscribes to ${id}`);
    }
    assert.equal(resource(plain, 'google_pubsub_topic', 'tracking_dead_letter').name, topics.trackingDeadLetter);
    assert.deepEqual(
      grantsOf(plain, pubsubAgent).filter((g) => g.startsWith('topic:')),
      [`topic:${topics.trackingDeadLetter}:roles/pubsub.publisher`],
    );
    const inspection = Object.values(resources(plain, 'google_pubsub_subscription')).find((s) => s.name === subscriptions.deadLetterInspection)!;
    assert.equal(inspection.topic, ref('google_pubsub_topic', 'tracking_dead_letter', 'id'));
    assert.equal(at(inspection, 'push_config'), undefined);
    assert.equal(inspection.message_retention_duration, `${31 * 86_400}s`, 'dead letters are kept as long as Pub/Sub allows (31 days)');
    assert.equal(inspection.filter, undefined);
  });

  it("each worker's subscription leaves out the event type the worker ignores", () => {
    const filterOf = (name: string) => Object.values(resources(plain, 'google_pubsub_subscription')).find((s) => s.name === name)?.filter;
    // The state worker publishes conversions and does nothing with them; analytics records conversions, not raw postbacks.
    assert.equal(filterOf(subscriptions.stateWriter), 'attributes.type != "conversion"');
    assert.equal(filterOf(subscriptions.analyticsWriter), 'attributes.type != "postback"');
    // The attribute the filters read is the event's own type.
    assert.match(readFileSync(join(repoRoot, 'functions/adapters/pubsub.ts'), 'utf8'), /attributes: \{ type: event\.type\b/);
  });
});

describe('Firestore', () => {
  it('expires clicks and visitors by their expireAt field', () => {
    assert.ok(Testing.toHaveResourceWithProperties(plainText, 'google_firestore_field', { collection: collections.clicks, field: 'expireAt', ttl_config: {} }));
    const fields = Object.values(resources(plain, 'google_firestore_field'));
    for (const collection of [collections.clicks, collections.visitors]) {
      const ttl = fields.find((f) => f.collection === collection && f.field === 'expireAt');
      assert.ok(ttl, `TTL field on ${collection}`);
      assert.deepEqual(ttl.ttl_config, {});
    }
  });

  it('indexes members.userId and the payouts the hourly job looks for across organisations, keeping the collection ones', () => {
    for (const [collection, field] of [[collections.members, 'userId'], [collections.payouts, 'status'], [collections.payouts, 'reversalParked'], [collections.payouts, 'restoringEntries']] as const) {
      const override = Object.values(resources(plain, 'google_firestore_field')).find((f) => f.collection === collection && f.field === field);
      assert.ok(override, `${collection}.${field}`);
      const scopes = (at(override, 'index_config', 'indexes') as Obj[]).map((i) => `${String(i.query_scope)} ${String(i.order)}`).sort();
      assert.deepEqual(scopes, ['COLLECTION ASCENDING', 'COLLECTION DESCENDING', 'COLLECTION_GROUP ASCENDING'], `${collection}.${field}`);
    }
  });

  it('has the composite indexes the queries need', () => {
    const have = Object.values(resources(plain, 'google_firestore_index')).map(
      (i) => `${String(i.query_scope ?? 'COLLECTION')} ${String(i.collection)}(${(i.fields as Obj[]).map((f) => `${String(f.field_path)} ${String(f.order).slice(0, 3)}`).join(', ')})`,
    );
    const need = [
      'COLLECTION conversions(status ASC, createdAt DES, __name__ ASC)',
      'COLLECTION conversions(campaignId ASC, createdAt DES, __name__ ASC)',
      'COLLECTION conversions(affiliateId ASC, createdAt DES, __name__ ASC)',
      'COLLECTION conversions(createdAt DES, __name__ ASC)',
      'COLLECTION_GROUP conversions(status ASC, fraudHold ASC, affiliateHeld ASC, approvableAt ASC)',
      'COLLECTION ledger(affiliateId ASC, createdAt DES, __name__ ASC)',
      'COLLECTION counters(affiliateId ASC, day ASC)',
      'COLLECTION counters(campaignId ASC, day ASC)',
      // /stats with ?campaignId= and ?affiliateId= (or the affiliate role's affiliateId in [...]) over a day range.
      'COLLECTION counters(campaignId ASC, affiliateId ASC, day ASC)',
      'COLLECTION counters(campaignId ASC, day ASC, clicks ASC)',
      'COLLECTION payoutRuns(createdAt DES, __name__ ASC)',
      'COLLECTION payouts(createdAt DES, __name__ ASC)',
      'COLLECTION payouts(runId ASC, createdAt DES, __name__ ASC)',
    ];
    for (const index of need) assert.ok(have.includes(index), `index ${index}`);
    // No query filters the ledger this way (its queries are equality-only, or affiliateId == newest first), and every
    // index costs a write per entry.
    for (const unused of ['COLLECTION ledger(affiliateId ASC, status ASC)', 'COLLECTION ledger(status ASC, approvableAt ASC)']) {
      assert.ok(!have.includes(unused), `no index ${unused}`);
    }
    for (const i of Object.values(resources(plain, 'google_firestore_index'))) assert.equal(i.database, ref('google_firestore_database', 'firestore', 'name'));
  });

  it('keeps the ledger recoverable: point-in-time recovery and a daily backup kept two weeks', () => {
    const db = resource(plain, 'google_firestore_database', 'firestore');
    assert.equal(db.point_in_time_recovery_enablement, 'POINT_IN_TIME_RECOVERY_ENABLED');
    const schedules = Object.values(resources(plain, 'google_firestore_backup_schedule'));
    assert.equal(schedules.length, 1);
    const [schedule] = schedules;
    assert.equal(schedule!.database, ref('google_firestore_database', 'firestore', 'name'));
    assert.deepEqual(schedule!.daily_recurrence, {});
    assert.equal(schedule!.weekly_recurrence, undefined);
    assert.equal(schedule!.retention, `${14 * 86_400}s`);
    // Firestore keeps a scheduled backup at most 14 weeks.
    assert.ok(backupRetentionDays <= 14 * 7);
  });
});

describe('BigQuery', () => {
  it('partitions by event day, clusters by org and campaign, with the schema of the analytics rows', () => {
    const table = resource(plain, 'google_bigquery_table', 'analytics_events');
    assert.equal(table.table_id, analyticsTables.events);
    assert.deepEqual(table.time_partitioning, { type: 'DAY', field: 'event_date' });
    assert.deepEqual(table.clustering, ['org_id', 'campaign_id']);
    const schema = JSON.parse(String(table.schema)) as { name: string; mode: string }[];
    assert.deepEqual(schema.map((f) => f.name), analyticsColumns.map((c) => c.name));
    assert.deepEqual(schema.map((f) => f.mode === 'NULLABLE'), analyticsColumns.map((c) => c.nullable));
    assert.equal(resource(plain, 'google_bigquery_dataset', 'analytics_dataset').dataset_id, 'abp_analytics');
  });
});

describe('least privilege', () => {
  const hmac = ['secret:ABP_CLICK_SIGNING_KEY:roles/secretmanager.secretAccessor', 'secret:ABP_HASH_KEY:roles/secretmanager.secretAccessor'];
  const secret = (name: string) => `secret:${name}:roles/secretmanager.secretAccessor`;
  const publish = `topic:${topics.trackingEvents}:roles/pubsub.publisher`;
  // The two HMAC keys go to every function because shared/config.ts requires them in production (see infra/functions.ts).
  const expected: Record<FunctionKey, string[]> = {
    api: ['project:roles/bigquery.jobUser', 'project:roles/datastore.user', `table:${analyticsTables.events}:roles/bigquery.dataViewer`, publish, ...hmac, secret('STRIPE_SECRET_KEY'), secret('SUPABASE_SERVICE_ROLE_KEY')],
    click: ['project:roles/datastore.viewer', publish, ...hmac],
    postback: ['project:roles/datastore.user', publish, ...hmac],
    pixel: ['project:roles/datastore.user', publish, ...hmac],
    stateWriter: ['project:roles/datastore.user', publish, ...hmac],
    analyticsWriter: [`table:${analyticsTables.events}:roles/bigquery.dataEditor`, ...hmac],
    commissionsJob: ['project:roles/datastore.user', publish, ...hmac],
    payoutsJob: ['project:roles/datastore.user', ...hmac, secret('STRIPE_SECRET_KEY')],
    stripeWebhook: ['project:roles/datastore.user', ...hmac, secret('STRIPE_CONNECT_WEBHOOK_SECRET'), secret('STRIPE_SECRET_KEY'), secret('STRIPE_WEBHOOK_SECRET')],
  };

  it('each function runs as its own service account holding exactly its expected roles', () => {
    const accounts = new Set<unknown>();
    for (const key of functionKeys) {
      const fn = resource(plain, 'google_cloudfunctions2_function', fnId(key));
      const email = at(fn, 'service_config', 'service_account_email');
      assert.equal(email, ref('google_service_account', `sa_${snake(key)}`, 'email'));
      accounts.add(email);
      assert.deepEqual(grantsOf(plain, saMember(`sa_${snake(key)}`)), [...expected[key]].sort(), `${key}'s grants`);
    }
    assert.equal(accounts.size, functionKeys.length);
  });

  it('a function mounts exactly the secrets it may read', () => {
    for (const key of functionKeys) {
      const fn = resource(plain, 'google_cloudfunctions2_function', fnId(key));
      const mounted = (at(fn, 'service_config', 'secret_environment_variables') as Obj[]).map((s) => {
        assert.equal(s.secret, ref('google_secret_manager_secret', `secret_${String(s.key)}`, 'secret_id'));
        return secret(String(s.key));
      });
      assert.deepEqual(mounted.sort(), expected[key].filter((g) => g.startsWith('secret:')).sort(), `${key}'s secrets`);
    }
  });

  it('grants follow what each bundle contains', () => {
    const uses = (key: FunctionKey, file: string) => built.get(key)!.inputs.includes(file);
    for (const key of functionKeys) {
      const grants = expected[key];
      assert.equal(uses(key, 'functions/adapters/pubsub.ts'), grants.includes(publish), `${key}: publishes iff it links the Pub/Sub adapter`);
      assert.equal(uses(key, 'functions/adapters/firestore.ts'), grants.some((g) => g.startsWith('project:roles/datastore.')), `${key}: Firestore`);
      assert.equal(uses(key, 'functions/adapters/analytics/bigquery.ts'), grants.some((g) => g.startsWith(`table:${analyticsTables.events}:`)), `${key}: BigQuery`);
      assert.equal(uses(key, 'functions/adapters/payouts/stripe-provider.ts'), grants.includes(secret('STRIPE_SECRET_KEY')), `${key}: Stripe key`);
      assert.equal(uses(key, 'functions/adapters/payouts/stripe-webhook.ts'), grants.includes(secret('STRIPE_WEBHOOK_SECRET')), `${key}: webhook secret`);
      assert.equal(uses(key, 'functions/adapters/user-directory.ts'), grants.includes(secret('SUPABASE_SERVICE_ROLE_KEY')), `${key}: service role key`);
    }
  });

  it('the invoker identities can invoke their targets and nothing else', () => {
    assert.deepEqual(grantsOf(plain, saMember('sa_build')), ['project:roles/cloudbuild.builds.builder']);
    const invokerOnly = (saId: string) =>
      Object.entries(resources(plain, 'google_cloud_run_v2_service_iam_member')).filter(([, r]) => r.member === saMember(saId)).map(([, r]) => `${String(r.name)} ${String(r.role)}`).sort();
    assert.deepEqual(invokerOnly('sa_scheduler'), [`${fnService('commissionsJob')} roles/run.invoker`, `${fnService('payoutsJob')} roles/run.invoker`]);
    assert.deepEqual(invokerOnly('push_state_writer'), [`${fnService('stateWriter')} roles/run.invoker`]);
    assert.deepEqual(invokerOnly('push_analytics_writer'), [`${fnService('analyticsWriter')} roles/run.invoker`]);
  });
});

describe('secrets', () => {
  it('creates the secrets with automatic replication and never a version', () => {
    const created = Object.values(resources(plain, 'google_secret_manager_secret'));
    assert.deepEqual(created.map((s) => s.secret_id).sort(), [...secretNames].sort());
    for (const s of created) assert.deepEqual(s.replication, { auto: {} });
    assert.deepEqual(resources(plain, 'google_secret_manager_secret_version'), {});
  });

  it('no secret value or secret-looking string appears in the synthesized JSON', () => {
    for (const text of [plainText, withAlertEmailText]) {
      for (const value of Object.values(fakeSecrets)) assert.ok(!text.includes(value), 'a secret from the environment leaked');
      assert.ok(!text.includes('doNotLeak'));
      assert.doesNotMatch(text, /\b(sk|rk)_(live|test)_\w+|whsec_\w+|-----BEGIN|private_key|AIza[0-9A-Za-z_-]{35}|eyJ[\w-]{8,}\.eyJ/);
    }
  });
});

describe('tracking domain (load balancer)', () => {
  /**
   * The function the load balancer sends a request path to, read from the synthesized URL map the way the load
   * balancer reads it: path rules of the host's path matcher, longest matching pattern first (a pattern ending in
   * '/*' matches what starts with the part before '*'), else the default service.
   */
  function routedTo(tf: TfJson, path: string): FunctionKey | undefined {
    const urlMap = resource(tf, 'google_compute_url_map', 'lb_url_map');
    assert.deepEqual(at(urlMap, 'host_rule', 0, 'hosts'), [domain]);
    const matcher = at(urlMap, 'path_matcher', 0) as Obj;
    assert.equal(matcher.name, at(urlMap, 'host_rule', 0, 'path_matcher'));
    let best: { length: number; service: unknown } = { length: -1, service: matcher.default_service };
    for (const rule of matcher.path_rule as Obj[]) {
      for (const pattern of rule.paths as string[]) {
        const matches = pattern.endsWith('/*') ? path.startsWith(pattern.slice(0, -1)) : path === pattern;
        if (matches && pattern.length > best.length) best = { length: pattern.length, service: rule.service };
      }
    }
    const backendId = /^\$\{google_compute_backend_service\.(\w+)\.id\}$/.exec(String(best.service))?.[1];
    assert.ok(backendId, `backend reference ${String(best.service)}`);
    const negId = /^\$\{google_compute_region_network_endpoint_group\.(\w+)\.id\}$/.exec(String(at(resource(tf, 'google_compute_backend_service', backendId), 'backend', 0, 'group')))?.[1];
    assert.ok(negId, `${backendId}: a serverless NEG`);
    const fn = at(resource(tf, 'google_compute_region_network_endpoint_group', negId), 'cloud_run', 'service');
    return functionKeys.find((k) => fnName(k) === fn);
  }

  it('passes the link cache settings to the tracking functions only, validated as the functions validate them', () => {
    // Unset, production would run the defaults whatever the operator exported for synth.
    const tf = JSON.parse(
      synthesize({ ABP_PROJECT_ID: project, ABP_BUNDLE_DIR: bundleRoot, ABP_TRACKING_DOMAIN: domain, LINK_CACHE_TTL_SECONDS: '30', LINK_CACHE_MAX_ENTRIES: '200000' }),
    ) as TfJson;
    for (const key of functionKeys) {
      const env = at(resource(tf, 'google_cloudfunctions2_function', fnId(key)), 'service_config', 'environment_variables') as Record<string, unknown>;
      const tracking = key === 'click' || key === 'postback' || key === 'pixel';
      assert.equal(env.LINK_CACHE_TTL_SECONDS, tracking ? '30' : undefined, key);
      assert.equal(env.LINK_CACHE_MAX_ENTRIES, tracking ? '200000' : undefined, key);
    }
    assert.equal(at(resource(plain, 'google_cloudfunctions2_function', fnId('click')), 'service_config', 'environment_variables', 'LINK_CACHE_MAX_ENTRIES'), undefined);
    assert.throws(
      () => loadInfraConfig({ ABP_PROJECT_ID: project, ABP_BUNDLE_DIR: bundleRoot, ABP_TRACKING_DOMAIN: domain, LINK_CACHE_MAX_ENTRIES: '5' }),
      /LINK_CACHE_MAX_ENTRIES/,
    );
  });

  it('synth refuses to run without ABP_TRACKING_DOMAIN, saying why', () => {
    // Without the domain the API's addresses (postback and pixel templates, onboarding links) had no host serving them.
    assert.throws(
      () => loadInfraConfig({ ABP_PROJECT_ID: project, ABP_BUNDLE_DIR: bundleRoot }),
      (err: unknown) => err instanceof Error && /ABP_TRACKING_DOMAIN: is required/.test(err.message) && /postback/.test(err.message),
    );
    const run = spawnSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'infra/main.ts')], {
      cwd: repoRoot,
      env: { ...process.env, ABP_TRACKING_DOMAIN: '', CDKTF_OUTDIR: join(workDir, 'no-domain.out'), ABP_BUNDLE_DIR: bundleRoot, ABP_PROJECT_ID: project },
      encoding: 'utf8',
    });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /^error: Invalid deployment settings:\n {2}ABP_TRACKING_DOMAIN: is required/m);
    assert.ok(!existsSync(join(workDir, 'no-domain.out', 'stacks')));
  });

  it('every function serves the tracking domain its PUBLIC_BASE_URL names, which the certificate covers', () => {
    for (const key of functionKeys) {
      assert.equal(at(resource(plain, 'google_cloudfunctions2_function', fnId(key)), 'service_config', 'environment_variables', 'PUBLIC_BASE_URL'), `https://${domain}`, key);
    }
    assert.deepEqual(at(resource(plain, 'google_compute_managed_ssl_certificate', 'lb_certificate'), 'managed', 'domains'), [domain]);
    assert.equal(plain.output?.public_base_url?.value, `https://${domain}`);
    assert.equal(plain.output?.stripe_webhook_url?.value, `https://${domain}${localPaths.stripeWebhook}`);
  });

  it('routes every address the API hands out to the function that answers it, as the local gateway does', () => {
    const addresses: [string, FunctionKey][] = [
      ['/c/lnk_123', 'click'], // tracking links (functions/api/routes/links.ts)
      ['/postback', 'postback'], // the postback template (functions/api/routes/postback-config.ts)
      ['/pixel', 'pixel'], // the pixel template (postback-config.ts)
      ['/v1/orgs/org_1/affiliates/aff_1', 'api'], // Stripe onboarding return and refresh URLs (functions/api/routes/money.ts)
      ['/v1/openapi.json', 'api'], // the OpenAPI document, whose servers entry is PUBLIC_BASE_URL (functions/api/index.ts)
      ['/v1/orgs', 'api'],
      [localPaths.stripeWebhook, 'stripeWebhook'], // the Stripe endpoint (stripe_webhook_url)
    ];
    for (const [path, key] of addresses) assert.equal(routedTo(plain, path), key, path);
    // Every public function is served under its local gateway path (shared/names.ts localPaths).
    const specs = functionSpecs({ ABP_CLICK_MIN_INSTANCES: 1 });
    const publicKeys = functionKeys.filter((k) => specs[k].trigger.kind === 'http' && specs[k].trigger.access === 'public');
    assert.deepEqual([...publicKeys].sort(), ['api', 'click', 'pixel', 'postback', 'stripeWebhook']);
    for (const key of publicKeys) {
      const prefix = (localPaths as Record<string, string>)[key];
      assert.ok(prefix, `${key} has a local gateway path`);
      assert.equal(routedTo(plain, prefix.endsWith('/') ? `${prefix}x` : prefix), key, `${key} at ${prefix}`);
    }
  });

  it("sets X-Client-Region over any the visitor sent, and reaches each 2nd-gen function through a Cloud Run serverless NEG", () => {
    const backends = resources(plain, 'google_compute_backend_service');
    assert.deepEqual(Object.keys(backends).sort(), ['lb_backend_api', 'lb_backend_click', 'lb_backend_pixel', 'lb_backend_postback', 'lb_backend_stripe_webhook']);
    for (const [id, b] of Object.entries(backends)) {
      // Set in the URL map only: where both set a header, the URL map's wins and the backend's is ignored.
      assert.equal(b.custom_request_headers, undefined, id);
      assert.equal(b.load_balancing_scheme, 'EXTERNAL_MANAGED');
    }
    const urlMap = resource(plain, 'google_compute_url_map', 'lb_url_map');
    assert.deepEqual(at(urlMap, 'header_action', 'request_headers_to_add'), [{ header_name: 'X-Client-Region', header_value: '{client_region}', replace: true }]);
    assert.deepEqual(at(urlMap, 'header_action', 'request_headers_to_remove'), ['CF-IPCountry']);
    const negs = Object.values(resources(plain, 'google_compute_region_network_endpoint_group'));
    assert.ok(negs.every((n) => n.network_endpoint_type === 'SERVERLESS'));
    // The Cloud Functions NEG type serves 1st-gen functions only; a 2nd-gen function is the Cloud Run service of its name.
    assert.ok(negs.every((n) => n.cloud_function === undefined));
    assert.deepEqual(negs.map((n) => at(n, 'cloud_run', 'service')).sort(), (['api', 'click', 'pixel', 'postback', 'stripeWebhook'] as const).map(fnName).sort());
  });

  it('behind the load balancer the tracking functions trust two proxy hops and accept traffic only from it', () => {
    for (const key of ['click', 'postback', 'pixel'] as const) {
      const fn = resource(plain, 'google_cloudfunctions2_function', fnId(key));
      assert.equal(at(fn, 'service_config', 'environment_variables', 'XFF_TRUSTED_HOPS'), '2');
      assert.equal(at(fn, 'service_config', 'ingress_settings'), 'ALLOW_INTERNAL_AND_GCLB');
    }
    for (const key of ['api', 'stripeWebhook'] as const) {
      assert.equal(at(resource(plain, 'google_cloudfunctions2_function', fnId(key)), 'service_config', 'ingress_settings'), 'ALLOW_ALL');
    }
  });

  it('port 80 redirects to HTTPS with a 308, so a postback POSTed to http:// keeps its method and body', () => {
    const redirect = resource(plain, 'google_compute_url_map', 'lb_http_redirect');
    // MOVED_PERMANENTLY_DEFAULT (301) lets a client turn the POST into a GET and drop the body.
    assert.deepEqual(redirect.default_url_redirect, { https_redirect: true, strip_query: false, redirect_response_code: 'PERMANENT_REDIRECT' });
    const proxy = resource(plain, 'google_compute_target_http_proxy', 'lb_http_proxy');
    assert.equal(proxy.url_map, ref('google_compute_url_map', 'lb_http_redirect', 'id'));
  });

  it("stores no visitor's address: no load balancer log on the tracking backends, no request log of the tracking functions", () => {
    const specs = functionSpecs({ ABP_CLICK_MIN_INSTANCES: 1 });
    const tracking = functionKeys.filter((k) => specs[k].tracking);
    assert.deepEqual([...tracking].sort(), ['click', 'pixel', 'postback']);
    for (const key of tracking) {
      const backend = resource(plain, 'google_compute_backend_service', `lb_backend_${snake(key)}`);
      // Off explicitly, so that an apply turns off logging enabled before.
      assert.deepEqual(backend.log_config, { enable: false }, `${key}: the load balancer would log httpRequest.remoteIp`);
    }
    const exclusions = Object.values(resources(plain, 'google_logging_project_exclusion'));
    assert.equal(exclusions.length, 1);
    const [exclusion] = exclusions;
    assert.equal(exclusion!.disabled, false);
    const filter = String(exclusion!.filter);
    assert.ok(filter.includes(`logName = "projects/${project}/logs/run.googleapis.com%2Frequests"`), filter);
    assert.ok(filter.includes('resource.type = "cloud_run_revision"'), filter);
    const named = [...filter.matchAll(/resource\.labels\.service_name = "([^"]+)"/g)].map((m) => m[1]).sort();
    assert.deepEqual(named, tracking.map((k) => kebab(functionNames[k])).sort(), 'exactly the tracking functions');
    // A service name is its function's name (a 2nd-gen function runs as the Cloud Run service of its name).
    for (const key of tracking) assert.equal(resource(plain, 'google_cloudfunctions2_function', fnId(key)).name, kebab(functionNames[key]));
  });
});

describe('alerting', () => {
  it('creates the alert policies whatever the settings, and e-mails them only with ABP_ALERT_EMAIL', () => {
    const policies = (tf: TfJson) => Object.values(resources(tf, 'google_monitoring_alert_policy'));
    assert.deepEqual(policies(plain).map((p) => p.display_name).sort(), [
      'ABP: a public function is answering 5xx',
      'ABP: a scheduled job failed',
      'ABP: a tracking worker is falling behind',
      'ABP: tracking events dead-lettered',
    ]);
    assert.ok(policies(plain).every((p) => p.notification_channels === undefined));
    assert.deepEqual(resources(plain, 'google_monitoring_notification_channel'), {});
    assert.ok(resource(plain, 'google_project_service', 'api_monitoring'));

    assert.equal(policies(withAlertEmail).length, 4);
    const channel = resource(withAlertEmail, 'google_monitoring_notification_channel', 'alert_email');
    assert.deepEqual(channel.labels, { email_address: 'ops@example.com' });
    for (const p of policies(withAlertEmail)) assert.deepEqual(p.notification_channels, [ref('google_monitoring_notification_channel', 'alert_email', 'id')]);
    const deadLetters = policies(plain).find((p) => p.display_name === 'ABP: tracking events dead-lettered')!;
    assert.match(String(at(deadLetters, 'conditions', 0, 'condition_threshold', 'filter')), new RegExp(`subscription_id = "${subscriptions.deadLetterInspection}"`));
  });

  it('alerts when a scheduled job logs an error, or its scheduler does', () => {
    const specs = functionSpecs({ ABP_CLICK_MIN_INSTANCES: 1 });
    const jobs = functionKeys.filter((k) => specs[k].trigger.kind === 'http' && specs[k].trigger.access === 'scheduler').map((k) => kebab(functionNames[k]));
    assert.deepEqual(jobs.sort(), ['commissions-job', 'payouts-job']);
    const policy = resource(withAlertEmail, 'google_monitoring_alert_policy', 'alert_job_errors');
    assert.deepEqual(policy.notification_channels, [ref('google_monitoring_notification_channel', 'alert_email', 'id')]);
    // A log-match condition must be alone in its policy and comes with a notification rate limit.
    const conditions = policy.conditions as Obj[];
    assert.equal(conditions.length, 1);
    const filter = String(at(conditions[0], 'condition_matched_log', 'filter'));
    assert.match(filter, /^severity >= ERROR AND /);
    for (const job of jobs) {
      assert.ok(filter.includes(`resource.labels.service_name = "${job}"`), `${job}'s own logs`);
      assert.ok(filter.includes(`resource.labels.job_id = "${job}"`), `${job}'s scheduler`);
    }
    assert.match(String(at(policy, 'alert_strategy', 'notification_rate_limit', 'period')), /^\d+s$/);
    // The jobs' scheduler jobs carry the names the filter looks for.
    assert.deepEqual(Object.values(resources(plain, 'google_cloud_scheduler_job')).map((j) => j.name).sort(), jobs);
  });

  it('alerts when a public function answers server errors', () => {
    const specs = functionSpecs({ ABP_CLICK_MIN_INSTANCES: 1 });
    const publicKeys = functionKeys.filter((k) => specs[k].trigger.kind === 'http' && specs[k].trigger.access === 'public');
    const policy = resource(withAlertEmail, 'google_monitoring_alert_policy', 'alert_server_errors');
    assert.deepEqual(policy.notification_channels, [ref('google_monitoring_notification_channel', 'alert_email', 'id')]);
    const watched: string[] = [];
    for (const condition of policy.conditions as Obj[]) {
      const threshold = condition.condition_threshold as Obj;
      const filter = String(threshold.filter);
      assert.match(filter, /metric\.type = "run\.googleapis\.com\/request_count"/);
      assert.match(filter, /metric\.labels\.response_code_class = "5xx"/);
      const services = /resource\.labels\.service_name = monitoring\.regex\.full_match\("([a-z|-]+)"\)/.exec(filter)?.[1]?.split('|');
      assert.ok(services, filter);
      watched.push(...services);
      // Each service on its own: summed over revisions and codes, grouped by service.
      assert.deepEqual(at(threshold, 'aggregations', 0, 'group_by_fields'), ['resource.label.service_name']);
      if (threshold.denominator_filter !== undefined) {
        assert.equal(String(threshold.denominator_filter), filter.replace(' AND metric.labels.response_code_class = "5xx"', ''), 'a share of the same services\' requests');
        assert.ok(Number(threshold.threshold_value) < 1);
      }
    }
    assert.deepEqual(watched.sort(), publicKeys.map((k) => kebab(functionNames[k])).sort(), 'every public function, the API and the Stripe webhook among them');
  });
});

describe('npm run synth (infra/main.ts)', () => {
  const realSettings = { ABP_PROJECT_ID: project, ABP_TRACKING_DOMAIN: domain, SUPABASE_URL: 'https://abcdefghijklmnop.supabase.co', SUPABASE_ANON_KEY: 'anon-key-for-tests' };
  /** infra/main.ts as `npm run synth` and `cdktf deploy` run it, with only these settings in its environment. */
  const runSynth = (outdir: string, env: Record<string, string>) => {
    const { ABP_PROJECT_ID: _p, SUPABASE_URL: _u, SUPABASE_ANON_KEY: _k, ABP_SYNTH_WITH_PLACEHOLDERS: _w, ...rest } = process.env;
    return spawnSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'infra/main.ts')], {
      cwd: repoRoot,
      env: { ...rest, CDKTF_OUTDIR: outdir, ABP_BUNDLE_DIR: bundleRoot, ...env },
      encoding: 'utf8',
    });
  };

  it('writes the Terraform JSON offline', () => {
    const outdir = join(workDir, 'cdktf.out');
    const run = runSynth(outdir, realSettings);
    assert.equal(run.status, 0, run.stderr);
    assert.doesNotMatch(run.stderr, /placeholder/);
    const file = join(outdir, 'stacks', 'abp', 'cdk.tf.json');
    assert.ok(existsSync(file));
    const tf = JSON.parse(readFileSync(file, 'utf8')) as TfJson;
    const object = resource(tf, 'google_storage_bucket_object', 'source_click');
    assert.ok(existsSync(join(outdir, 'stacks', 'abp', String(object.source))), 'the click bundle was zipped beside the JSON');
  });

  it('refuses a placeholder setting, naming each one still set, unless ABP_SYNTH_WITH_PLACEHOLDERS=1', () => {
    // Applied, the placeholders deploy without an error and every sign-in to the API fails afterwards.
    const refused = runSynth(join(workDir, 'placeholders.out'), { ABP_TRACKING_DOMAIN: domain });
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /^error: Placeholder deployment settings:$/m);
    for (const name of ['ABP_PROJECT_ID', 'SUPABASE_URL', 'SUPABASE_ANON_KEY']) assert.match(refused.stderr, new RegExp(`^ {2}${name} `, 'm'), name);
    assert.match(refused.stderr, /ABP_SYNTH_WITH_PLACEHOLDERS=1/);
    assert.ok(!existsSync(join(workDir, 'placeholders.out', 'stacks')), 'nothing written');

    const oneLeft = runSynth(join(workDir, 'one-placeholder.out'), { ...realSettings, SUPABASE_ANON_KEY: '' });
    assert.equal(oneLeft.status, 1);
    assert.deepEqual(oneLeft.stderr.split('\n').filter((l) => /^ {2}\w+ /.test(l)).map((l) => l.trim().split(' ')[0]), ['SUPABASE_ANON_KEY']);

    const offline = runSynth(join(workDir, 'offline.out'), { ABP_TRACKING_DOMAIN: domain, ABP_SYNTH_WITH_PLACEHOLDERS: '1' });
    assert.equal(offline.status, 0, offline.stderr);
    assert.match(offline.stderr, /warning: SUPABASE_URL is a placeholder/);
    assert.match(offline.stderr, /do not apply/);
    assert.ok(existsSync(join(workDir, 'offline.out', 'stacks', 'abp', 'cdk.tf.json')));
  });
});
