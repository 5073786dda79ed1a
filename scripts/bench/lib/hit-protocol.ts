/**
 * The messages between a benchmark and its hit server (hit-server.ts, a child process; hit-process.ts starts it).
 * The same child serves the state worker for the tracking benchmark (a second instance, asked to serve only
 * that: `stateWriter`, then startRelay/stopRelay). Types only, so that either side can import them without
 * loading the other.
 *
 * Over Node's IPC channel: the child says `{ type: 'hello' }` once it listens for requests; the parent then sends
 * calls `{ type: 'call', id, method, request }`, each answered by `{ type: 'reply', id, result }` or
 * `{ type: 'reply', id, error }`; `{ type: 'close' }` (or the channel closing, e.g. because the parent died)
 * makes the child close its servers and clients and exit.
 */

export interface Batching {
  maxMessages?: number;
  maxMilliseconds?: number;
}

/**
 * A message to publish as the click function would: JSON data and attributes, on `topic`, either with the
 * click function's own grouped publisher ('grouped', functions/adapters/pubsub.ts) or with the client's
 * timer batching (`Batching`; undefined: the client's defaults).
 */
export interface ProbeMessage {
  topic: string;
  batching?: Batching | 'grouped';
  /** The message data (a click event's JSON). */
  data: string;
  attributes: Record<string, string>;
}

/** What to serve, each on a free port of 127.0.0.1; only what is asked for is started. */
export interface ServeRequest {
  /** A: a bare node:http server that answers every request with a 302 to this URL. */
  bareRedirect?: string;
  /** B: a Functions Framework function that only redirects to this URL. */
  ffRedirect?: string;
  /** D: a Functions Framework function that awaits one publish of `message`, then redirects to `to`. */
  publishRedirect?: { to: string; message: ProbeMessage };
  /** The hit functions (click /c/…, postback /postback, pixel /pixel) behind one gateway, as the stack serves them. */
  hitFunctions?: boolean;
  /**
   * The click function alone on a server of its own, as production serves it (an instance per function; the
   * load balancer's URL map is not on the instance). Part 1 measures it there, beside B's bare framework server.
   */
  clickFunction?: boolean;
  /**
   * The state worker (functions/workers/state-writer.ts) behind a gateway at its local push path, as the stack
   * serves it; it is fed only once startRelay is called.
   */
  stateWriter?: boolean;
}

/** The base URL of each server started, by the ServeRequest key that asked for it. */
export type ServeUrls = { [K in keyof ServeRequest]?: string };

/** Awaited publishes of `message` from the hit server: `sequential` one at a time, then `concurrency` loops for `seconds`. */
export interface PublishProbeRequest {
  message: ProbeMessage;
  warm: number;
  sequential: number;
  concurrency: number;
  seconds: number;
}

export interface PublishProbeResult {
  /** Milliseconds per awaited publish. */
  sequential: number[];
  concurrent: number[];
  concurrentSeconds: number;
}

/** The link cache: `hits` awaited lookups of a cached link, then one lookup each of links never looked up before. */
export interface LinkCacheProbeRequest {
  linkId: string;
  hits: number;
  freshLinkIds: string[];
}

export interface LinkCacheProbeResult {
  hitMicroseconds: number;
  missMilliseconds: number[];
}

/**
 * Starts the relay (scripts/local/push-relay.ts) of the state worker's subscription, POSTing to the state worker
 * served by this child (serve `stateWriter` first), with at most `inFlight` deliveries in flight; idempotent.
 */
export interface StartRelayRequest {
  inFlight: number;
}

/** Every call the hit server answers: its request and result types. */
export interface HitServerCalls {
  serve: { request: ServeRequest; result: ServeUrls };
  startRelay: { request: StartRelayRequest; result: void };
  /** Closes the relay, if one runs (what it has in flight finishes or is redelivered later). */
  stopRelay: { request: Record<string, never>; result: void };
  probePublish: { request: PublishProbeRequest; result: PublishProbeResult };
  probeLinkCache: { request: LinkCacheProbeRequest; result: LinkCacheProbeResult };
}

export type HitServerMethod = keyof HitServerCalls;

export type ToHitServer = { type: 'call'; id: number; method: HitServerMethod; request: unknown } | { type: 'close' };

export type FromHitServer = { type: 'hello' } | { type: 'reply'; id: number; result?: unknown; error?: string };
