import { Worker } from 'node:worker_threads';

/**
 * Runs `source` (plain CommonJS, evaluated in the worker so that it does not depend on the parent's TypeScript
 * loader) on a thread of its own and resolves with the first message it posts; a message with `error` rejects.
 * The benchmarks serve the system under test from this process, so a load generator must not share its event
 * loop. Aborting `signal` rejects at once; the worker is terminated in every case.
 */
export async function runWorker<T>(source: string, workerData: unknown, signal?: AbortSignal): Promise<T> {
  signal?.throwIfAborted();
  const worker = new Worker(source, { eval: true, workerData });
  try {
    return await new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(signal?.reason instanceof Error ? signal.reason : new Error('Aborted'));
      signal?.addEventListener('abort', onAbort, { once: true });
      const settle = () => signal?.removeEventListener('abort', onAbort);
      worker.once('message', (m: T & { error?: string }) => {
        settle();
        if (m.error) reject(new Error(m.error));
        else resolve(m);
      });
      worker.once('error', (err) => {
        settle();
        reject(err);
      });
      worker.once('exit', (code) => {
        settle();
        reject(new Error(`The load worker exited (code ${code}) without a result`));
      });
    });
  } finally {
    await worker.terminate();
  }
}
