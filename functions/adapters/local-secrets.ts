import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { config } from '../../shared/config';

/**
 * Keys that production reads from Secret Manager (via the environment). Locally they are generated once per
 * machine into ABP_DATA_DIR, so nothing secret is committed and every process of the local stack (the
 * server, the token script, tests) agrees on them.
 */
export interface LocalSecrets {
  hashKey: string;
  clickSigningKey: string;
}

let cached: LocalSecrets | undefined;

function readOrCreate<T>(file: string, create: () => T): T {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    mkdirSync(join(file, '..'), { recursive: true });
    try {
      // 'wx' fails if another process created it first; then we read theirs.
      writeFileSync(file, JSON.stringify(create(), null, 2), { flag: 'wx', mode: 0o600 });
    } catch {
      /* created concurrently */
    }
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  }
}

export function localJsonFile<T>(name: string, create: () => T): T {
  return readOrCreate(join(config().ABP_DATA_DIR, name), create);
}

export function secrets(): LocalSecrets {
  if (cached) return cached;
  const c = config();
  const local = c.ABP_HASH_KEY && c.ABP_CLICK_SIGNING_KEY
    ? undefined
    : localJsonFile<LocalSecrets>('local-secrets.json', () => ({
        hashKey: randomBytes(32).toString('base64url'),
        clickSigningKey: randomBytes(32).toString('base64url'),
      }));
  cached = {
    hashKey: c.ABP_HASH_KEY ?? local!.hashKey,
    clickSigningKey: c.ABP_CLICK_SIGNING_KEY ?? local!.clickSigningKey,
  };
  return cached;
}
