import type { AnalyticsRow } from '../../../shared/analytics/schema';
import type { ScopedReportQuery, ReportResult } from '../../../shared/analytics/report';
import { ApiError } from '../../../shared/errors';

/**
 * Analytics storage behind one interface: BigQuery in production, an embedded DuckDB file locally and in
 * tests (BigQuery has no emulator). Both run SQL compiled from the same report definition
 * (shared/analytics/report.ts), so they agree on what a click, a unique click and a conversion are.
 */
export interface AnalyticsStore {
  /**
   * Idempotent on event_id: Pub/Sub redelivers, and a redelivered row must change nothing (the first copy wins).
   * Resolves when every row is stored. Throws RowsRefused when the store answered row by row (the rows it names
   * are not stored, every other one is), InsertFailed when the request failed as a whole for a reason no row is
   * to blame for; any other error says only that the group was refused.
   */
  insert(rows: AnalyticsRow[]): Promise<void>;
  /** Throws a ZodError when the query is invalid (see reportQuerySchema), QueryTimedOut when it runs too long. */
  report(q: ScopedReportQuery): Promise<ReportResult>;
  /** For the read-back in tests and the conversion/click lookups: rows by event id within an org. */
  getEvents(orgId: string, eventIds: string[]): Promise<AnalyticsRow[]>;
  /** Waits for work in flight; the store cannot be used afterwards. */
  close(): Promise<void>;
}

/** Some rows of an insert were refused, each for a reason of its own (`refused`: index in the rows given → why); all others are stored. */
export class RowsRefused extends Error {
  constructor(readonly refused: ReadonlyMap<number, Error>) {
    super(`${refused.size} row(s) refused: ${[...refused.values()].slice(0, 3).map((e) => e.message).join('; ')}`);
    this.name = 'RowsRefused';
  }
}

/** The insert failed as a whole (network, the store's 5xx, credentials): no row is known stored, and none is to blame. */
export class InsertFailed extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InsertFailed';
  }
}

/**
 * A report or lookup ran longer than the store allows. The API answers 503 (`unavailable`): the data is
 * there and the same request may finish another time (a busier moment, a narrower range), and 504 is a
 * status this API does not otherwise use.
 */
export class QueryTimedOut extends ApiError {
  constructor(what: string, readonly timeoutMs: number, options?: { cause?: unknown }) {
    super('unavailable', `The ${what} did not finish within ${timeoutMs / 1000} s in the analytics store and was stopped; retry in a moment or ask for a shorter period`);
    this.name = 'QueryTimedOut';
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}
