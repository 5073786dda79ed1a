/**
 * The test runner behind `npm test`: starts the real emulators on free ports, runs every test/**.test.ts
 * with Node's test runner against them, and stops the emulators whatever happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startEmulators } from './local/emulators';

async function main(): Promise<number> {
  const filter = process.argv.slice(2);
  const files = readdirSync('test', { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => join('test', f))
    .filter((f) => !filter.length || filter.some((x) => f.includes(x)))
    .sort();
  const logDir = mkdtempSync(join(tmpdir(), 'abp-test-logs-'));
  const emulators = await startEmulators({ pubsubPort: await freePort(), firestorePort: await freePort(), project: 'abp-test', logDir });
  const stopAll = () => Promise.all(emulators.map((e) => e.stop()));
  let child: ChildProcess | undefined;
  // A cancelled CI job sends SIGTERM: the test files and the emulators (detached Java processes) must not
  // outlive it either.
  const stopOn = (code: number) => () => {
    child?.kill('SIGTERM');
    void stopAll().then(() => process.exit(code));
  };
  process.on('SIGINT', stopOn(130));
  process.on('SIGTERM', stopOn(143));
  let code = 1;
  try {
    code = await new Promise<number>((resolve) => {
      child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-timeout=600000', ...files], {
        stdio: 'inherit',
        env: { ...process.env, METADATA_SERVER_DETECTION: 'none' },
      });
      child.on('exit', (exitCode) => resolve(exitCode ?? 1));
    });
    return code;
  } finally {
    await stopAll();
    // The emulators' logs explain a failed run; a passing run's are only disk used in the temp dir, once per run.
    if (code === 0) rmSync(logDir, { recursive: true, force: true });
    else console.error(`Emulator logs: ${logDir}`);
  }
}

main().then((code) => process.exit(code), (err) => {
  console.error(err);
  process.exit(1);
});
