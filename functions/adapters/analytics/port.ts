import type { AnalyticsRow } from '../../../shared/analytics/schema';
import type { ScopedReportQuery, ReportResult } from '../../../shared/analytics/report';

/**
 * Analytics storage behind one interface: BigQuery in production, an embedded DuckDB file locally and in
 * tests (BigQuery has no emulator). Both run SQL compiled from the same report definition
 * (shared/analytics/report.ts), so they agree on what a click, a unique click and a conversion are.
 */
export interface AnalyticsStore {
  /** Idempotent on event_id: Pub/Sub redelivers, and a redelivered row must change nothing (the first copy wins). */
  insert(rows: AnalyticsRow[]): Promise<void>;
  /** Throws a ZodError when the query is invalid (see reportQuerySchema). */
  report(q: ScopedReportQuery): Promise<ReportResult>;
  /** For the read-back in tests and the conversion/click lookups: rows by event id within an org. */
  getEvents(orgId: string, eventIds: string[]): Promise<AnalyticsRow[]>;
  /** Waits for work in flight; the store cannot be used afterwards. */
  close(): Promise<void>;
}
