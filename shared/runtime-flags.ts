/**
 * Node flags for a function instance with one vCPU, set as NODE_OPTIONS by infra/ and given the same way to the
 * functions under test by the benchmarks. Node starts V8 with four helper threads for garbage collection and
 * compilation whatever the instance's CPU share, and on one vCPU they only take turns with the thread that
 * serves requests; one is enough. Only flags NODE_OPTIONS accepts may be here (`--single-threaded-gc`, which
 * we had first, is not: node exits at start, and so would every function): test/infra.test.ts starts node with
 * each function's NODE_OPTIONS. scripts/bench/gc-flags.ts measures what the flags change (figures in
 * docs/deploy.md).
 */
export const oneVcpuNodeOptions: readonly string[] = ['--v8-pool-size=1'];
