/**
 * `npm run synth` (= `npx tsx infra/main.ts`, the "app" of cdktf.json): writes the Terraform JSON for the whole
 * platform to cdktf.out/stacks/abp/cdk.tf.json, with each function bundle zipped beside it. Runs offline; apply it
 * with plain Terraform or OpenTofu (docs/deploy.md). Settings come from the environment (infra/config.ts); a setting
 * still at its placeholder stops it, unless ABP_SYNTH_WITH_PLACEHOLDERS=1.
 */
import { join } from 'node:path';
import { App } from 'cdktf';
import { loadInfraConfig, placeholderSettings, PlaceholderSettingsError } from './config';
import { repoRoot } from './entries';
import { AbpStack, MissingBundleError, stackName } from './stack';

function main(): void {
  const config = loadInfraConfig(process.env);
  const placeholders = placeholderSettings(config, process.env);
  for (const warning of placeholders) console.warn(`warning: ${warning}`);
  const outdir = process.env.CDKTF_OUTDIR ?? join(repoRoot, 'cdktf.out');
  const app = new App({ outdir });
  new AbpStack(app, stackName, config);
  app.synth();
  console.log(`Synthesized ${join(outdir, 'stacks', stackName, 'cdk.tf.json')} for project ${config.ABP_PROJECT_ID} (${config.ABP_REGION}).`);
  if (placeholders.length) console.warn('warning: synthesized with placeholders (ABP_SYNTH_WITH_PLACEHOLDERS=1): do not apply this output.');
  else console.log(`Next: cd ${join(outdir, 'stacks', stackName)} && terraform init && terraform apply`);
}

try {
  main();
} catch (err) {
  if (err instanceof MissingBundleError || err instanceof PlaceholderSettingsError || (err instanceof Error && err.message.startsWith('Invalid deployment settings'))) {
    console.error(`error: ${err.message}`);
  } else {
    console.error(err);
  }
  process.exit(1);
}
