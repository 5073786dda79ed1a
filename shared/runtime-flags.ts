/**
 * Node flags for a function instance with one vCPU, set as NODE_OPTIONS by infra/ and given to the functions
 * under test by the tracking benchmark. V8 sizes its parallel garbage-collection helpers by the CPUs the
 * machine reports, not by the instance's CPU share, so on one vCPU the helpers only take turns with the
 * thread that serves requests. Measured on a bare Functions Framework redirect on one core at 50
 * connections (the framework's per-request domain makes every scavenge keep megabytes alive, so
 * collections are frequent and long): p99 14-15 ms with --single-threaded-gc against 18-19 ms without,
 * and a few per cent more requests per second.
 */
export const oneVcpuNodeOptions: readonly string[] = ['--single-threaded-gc'];
