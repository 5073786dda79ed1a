/** The exit status a shell reports for a process ended by each signal: 128 + its number. */
export const exitCodes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129, SIGQUIT: 131 } as const;
export type StopSignal = keyof typeof exitCodes;

/**
 * Runs `stop` on the first signal that ends a process from a terminal or a CI runner, then exits with that signal's
 * status. SIGHUP too (a closed terminal): unhandled, any of them ends Node without its 'exit' event, and the
 * emulators, in process groups of their own, would outlive it with their ports taken.
 *
 * Install it before the emulators start. A signal that comes more than a second after the first exits at once
 * (one Ctrl-C often arrives twice, from the terminal and relayed by npm or tsx), so a stop stuck on a dead emulator
 * never needs `kill -9`: the exit hook of emulators.ts still kills the emulators' groups.
 */
export function onStopSignals(stop: (signal: StopSignal) => Promise<void>): void {
  let first = 0;
  for (const signal of Object.keys(exitCodes) as StopSignal[]) {
    process.on(signal, () => {
      if (first) {
        if (Date.now() - first > 1000) process.exit(exitCodes[signal]);
        return;
      }
      first = Date.now();
      void stop(signal)
        .catch((err: unknown) => console.error(err))
        .finally(() => process.exit(exitCodes[signal]));
    });
  }
}
