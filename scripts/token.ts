/**
 * Prints a local access token, alone on stdout: `npm run --silent token -- --email alice@example.com`.
 * The same email always gets the same user id. Tokens are signed with the local stack's key (ABP_DATA_DIR),
 * whose public half `npm start` serves as the JWKS, and issued for the stack `npm start` last started with that
 * data directory (whatever its PORT), unless HOST, PORT or SUPABASE_URL is given here.
 */
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { mintDevToken, runningStackAuthBase } from '../functions/adapters/dev-identity';

const { values } = parseArgs({ options: { email: { type: 'string' }, ttl: { type: 'string', default: '86400' } } });
const email = z.email().safeParse(values.email);
const ttl = z.coerce.number().int().min(60).max(30 * 86400).safeParse(values.ttl);
if (!email.success || !ttl.success) {
  console.error('usage: npm run --silent token -- --email alice@example.com [--ttl seconds]');
  process.exit(2);
}
const told = ['HOST', 'PORT', 'SUPABASE_URL'].some((k) => process.env[k]);
const issuerBase = told ? undefined : runningStackAuthBase();
process.stdout.write(`${mintDevToken(email.data, { ttlSeconds: ttl.data, issuerBase })}\n`);
