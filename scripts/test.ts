/**
 * The test runner behind `npm test`: starts the real emulators on free ports, runs every test/**.test.ts
 * with Node's test runner against them, and stops the emulators whatever happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmulators, type RunningEmulator } from './local/emulators';
import { onStopSignals } from './local/signals';

async function main(): Promise<number> {
  const filter = process.argv.slice(2);
  const files = readdirSync('test', { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => join('test', f))
    .filter((f) => !filter.length || filter.some((x) => f.includes(x)))
    .sort();
  // Given no file, node --test looks for tests of its own, finds none and passes: a mistyped name must not.
  if (!files.length) {
    console.error(`No test file under test/ matches ${filter.join(', ')}`);
    return 2;
  }
  let emulators: RunningEmulator[] = [];
  let child: ChildProcess | undefined;
  // From the start: a cancelled CI job (SIGTERM) or a Ctrl-C while the emulators start must not leave their
  // detached Java processes behind, nor the test files.
  onStopSignals(async () => {
    child?.kill('SIGTERM');
    await Promise.all(emulators.map((e) => e.stop()));
  });
  const logDir = mkdtempSync(join(tmpdir(), 'abp-test-logs-'));
  emulators = await startEmulators({ pubsubPort: 'any', firestorePort: 'any', project: 'abp-test', logDir });
  const stopAll = () => Promise.all(emulators.map((e) => e.stop()));
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
