/**
 * Node flags for a function instance with one vCPU, set as NODE_OPTIONS by infra/ and given to the functions
 * under test by the tracking benchmark. V8 sizes its parallel garbage-collection helpers by the CPUs the
 * machine reports, not by the instance's CPU share, so on one vCPU the helpers only take turns with the
 * thread that serves requests. scripts/bench/gc-flags.ts measures what the flags change (figures in
 * docs/deploy.md).
 */
export const oneVcpuNodeOptions: readonly string[] = ['--single-threaded-gc'];
