import { join, resolve } from 'node:path';
import { functionNames } from '../shared/names';

/**
 * Which source file each deployed function is bundled from. Shared by the bundler (scripts/build.ts) and the
 * cdktf app, and deliberately free of cdktf and esbuild imports so both can load it cheaply.
 */
export type FunctionKey = keyof typeof functionNames;

export const functionEntries: Record<FunctionKey, string> = {
  api: 'functions/api/index.ts',
  click: 'functions/tracking/click.ts',
  postback: 'functions/tracking/postback.ts',
  pixel: 'functions/tracking/pixel.ts',
  stateWriter: 'functions/workers/state-writer.ts',
  analyticsWriter: 'functions/workers/analytics-writer.ts',
  commissionsJob: 'functions/jobs/commissions.ts',
  payoutsJob: 'functions/jobs/payouts.ts',
  stripeWebhook: 'functions/webhooks/stripe.ts',
};

export const functionKeys = Object.keys(functionEntries) as FunctionKey[];

/** The repository root (this file lives in infra/). */
export const repoRoot = resolve(__dirname, '..');

/** Where `npm run build` writes the bundles: one directory per function, named after its entry point. */
export const defaultBundleRoot = join(repoRoot, 'dist', 'functions');

/**
 * What `npm run build` writes into each bundle directory, all of it uploaded: the code, the package.json naming the
 * external dependencies, and the lockfile pinning them and what they need.
 */
export const bundleFiles = ['index.js', 'package-lock.json', 'package.json'] as const;

export function bundleDir(root: string, key: FunctionKey): string {
  return join(root, functionNames[key]);
}

/** Cloud resource names (functions, service accounts, jobs) are lowercase: `stateWriter` → `state-writer`. */
export function kebab(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
}

/** Terraform logical ids: `stateWriter` → `state_writer`. */
export function snake(name: string): string {
  return kebab(name).replace(/-/g, '_');
}
