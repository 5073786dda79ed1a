/**
 * Prints a local access token, alone on stdout: `npm run --silent token -- --email alice@example.com`.
 * The same email always gets the same user id. Tokens are signed with the local stack's key (ABP_DATA_DIR),
 * whose public half `npm start` serves as the JWKS, and issued for the stack `npm start` last started with that
 * data directory (whatever its PORT), unless HOST, PORT or SUPABASE_URL is given here.
 */
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { mintDevToken, runningStackAuthBase } from '../functions/adapters/dev-identity';

const usage = 'usage: npm run --silent token -- --email alice@example.com [--ttl seconds]';
function refuse(why: string): never {
  console.error(`${why}\n${usage}`);
  process.exit(2);
}

let values: { email?: string; ttl?: string };
try {
  ({ values } = parseArgs({ options: { email: { type: 'string' }, ttl: { type: 'string', default: '86400' } } }));
} catch (err) {
  // `npm run token alice@…` or `npm run token --email …` (npm keeps options before `--` for itself).
  refuse(`${(err as Error).message.split('\n')[0]}: options go after \`--\`, the email after --email`);
}
const email = z.email().safeParse(values.email);
if (!email.success) refuse(values.email === undefined ? 'No --email given' : `--email ${values.email} is not an email address`);
const ttl = z.coerce.number().int().min(60).max(30 * 86400).safeParse(values.ttl);
if (!ttl.success) refuse(`--ttl ${values.ttl} is not a whole number of seconds from 60 to ${30 * 86400} (30 days)`);
const told = ['HOST', 'PORT', 'SUPABASE_URL'].some((k) => process.env[k]);
const issuerBase = told ? undefined : runningStackAuthBase();
process.stdout.write(`${mintDevToken(email.data, { ttlSeconds: ttl.data, issuerBase })}\n`);
