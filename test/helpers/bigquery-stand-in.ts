import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { analyticsColumns, type ColumnType } from '../../shared/analytics/schema';
import { readBody } from './read-body';

/**
 * A local HTTP server that answers as BigQuery's REST API (v2) does, for the calls the analytics adapter makes,
 * so the real @google-cloud/bigquery client (its request building, partial-failure errors, query polling) runs
 * against it. Point the client at it with BIGQUERY_EMULATOR_HOST=<url> (the client's own setting: it then sends
 * /projects/… without the /bigquery/v2 prefix) or `apiEndpoint: <url>` (with the prefix); both are served.
 *
 * Behaviour follows the REST reference:
 * - tabledata.insertAll checks each row against the table's columns (those of shared/analytics/schema.ts, which
 *   the deployed table is made from): unknown fields, missing required ones and values of the wrong type are
 *   `invalid`, as are rows the test refuses (refuseRows). Without skipInvalidRows a request with an invalid row
 *   stores nothing: each invalid row is listed with reason `invalid`, every other with reason `stopped`. With
 *   skipInvalidRows the valid rows are stored and only the invalid ones listed. Rows are kept by insertId, the
 *   first copy winning (BigQuery's best-effort de-duplication, made exact here).
 * - jobs.insert creates a query job that runs for as long as the test says (answerQueries); jobs.getQueryResults
 *   and jobs.query wait up to `timeoutMs` (10 s by default) for it and answer `jobComplete: false` if it is still
 *   running; a job given `configuration.jobTimeoutMs` is stopped once that has passed since it was created.
 *   What getQueryResults then answers is not spelled out in the reference: here a 400 with reason `timeout`.
 * Credentials are not checked: the client in these tests sends none or a static token, whichever it is given.
 */

export interface BigQueryRequest {
  method: string;
  /** Without the /bigquery/v2 prefix. */
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

export interface QueryPlan {
  /** How long the job runs before its result is ready. */
  runMs?: number;
  schema?: { name: string; type: string }[];
  /** One array of values per row, in the schema's order, as the API carries them (strings or null). */
  rows?: (string | null)[][];
}

export interface QueryJob {
  jobId: string;
  projectId: string;
  location: string;
  createdAt: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  configuration: any;
  plan: QueryPlan;
}

export interface BigQueryStandIn {
  url: string;
  requests: BigQueryRequest[];
  /** The insertAll requests, in order. */
  inserts(): BigQueryRequest[];
  /** The rows stored in `project.dataset.table`, in the order they were stored. */
  rows(table: string): Record<string, unknown>[];
  jobs: Map<string, QueryJob>;
  /** Rows BigQuery would find invalid beyond the table's columns: the error to report for one, or undefined. */
  refuseRows(check: ((row: Record<string, unknown>) => { location: string; message: string } | undefined) | undefined): void;
  /** Answers the next `times` insertAll requests with this HTTP error instead (a request that fails as a whole). */
  failInserts(error: { status: number; reason: string; message: string }, times?: number): void;
  /** How the queries that arrive from now on run. */
  answerQueries(plan: (sql: string, job: Pick<QueryJob, 'configuration'>) => QueryPlan): void;
  close(): Promise<void>;
}

type Reply = { status: number; body: unknown };

const columnTypes = new Map(analyticsColumns.map((c) => [c.name, c]));
const validValue: Record<ColumnType, (v: unknown) => boolean> = {
  STRING: (v) => typeof v === 'string',
  INT64: (v) => (typeof v === 'number' && Number.isSafeInteger(v)) || (typeof v === 'string' && /^-?\d+$/.test(v)),
  BOOL: (v) => typeof v === 'boolean',
  TIMESTAMP: (v) => typeof v === 'string' && !Number.isNaN(Date.parse(v)),
  DATE: (v) => typeof v === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(v),
};

/** The table's own checks, as BigQuery words them. */
function schemaError(row: Record<string, unknown>): { location: string; message: string } | undefined {
  for (const [name, value] of Object.entries(row)) {
    const column = columnTypes.get(name);
    if (!column) return { location: name, message: `no such field: ${name}.` };
    if (value === null || value === undefined) {
      if (!column.nullable) return { location: name, message: `Missing required field: ${name}.` };
    } else if (!validValue[column.type](value)) {
      return { location: name, message: `Cannot convert value to ${column.type.toLowerCase()}: ${JSON.stringify(value)}.` };
    }
  }
  for (const c of analyticsColumns) if (!c.nullable && !(c.name in row)) return { location: c.name, message: `Missing required field: ${c.name}.` };
  return undefined;
}

const errorReply = (status: number, reason: string, message: string): Reply => ({
  status,
  body: { error: { code: status, message, errors: [{ message, domain: 'global', reason }], status: status === 400 ? 'INVALID_ARGUMENT' : status === 403 ? 'PERMISSION_DENIED' : 'UNAVAILABLE' } },
});


export async function startBigQueryStandIn(): Promise<BigQueryStandIn> {
  const requests: BigQueryRequest[] = [];
  const tables = new Map<string, Map<string, Record<string, unknown>>>();
  const jobs = new Map<string, QueryJob>();
  const timers = new Set<NodeJS.Timeout>();
  let refuse: ((row: Record<string, unknown>) => { location: string; message: string } | undefined) | undefined;
  let failing: { error: { status: number; reason: string; message: string }; remaining: number } | undefined;
  let plan: (sql: string, job: Pick<QueryJob, 'configuration'>) => QueryPlan = () => ({});

  function insertAll(table: string, body: { rows?: { insertId?: string; json?: Record<string, unknown> }[]; skipInvalidRows?: boolean }): Reply {
    if (failing && failing.remaining-- > 0) return errorReply(failing.error.status, failing.error.reason, failing.error.message);
    const rows = body.rows ?? [];
    if (!rows.length) return errorReply(400, 'invalid', 'No rows present in the request.');
    const invalid = rows.map((r) => schemaError(r.json ?? {}) ?? refuse?.(r.json ?? {}));
    const stored = tables.get(table) ?? new Map<string, Record<string, unknown>>();
    tables.set(table, stored);
    const anyInvalid = invalid.some(Boolean);
    if (!anyInvalid || body.skipInvalidRows) {
      rows.forEach((r, i) => {
        const key = r.insertId ?? `${Math.random()}`;
        if (!invalid[i] && !stored.has(key)) stored.set(key, r.json ?? {});
      });
    }
    if (!anyInvalid) return { status: 200, body: { kind: 'bigquery#tableDataInsertAllResponse' } };
    const insertErrors = rows.flatMap((_, index) => {
      const e = invalid[index];
      if (e) return [{ index, errors: [{ reason: 'invalid', location: e.location, debugInfo: '', message: e.message }] }];
      return body.skipInvalidRows ? [] : [{ index, errors: [{ reason: 'stopped', location: '', debugInfo: '', message: '' }] }];
    });
    return { status: 200, body: { kind: 'bigquery#tableDataInsertAllResponse', insertErrors } };
  }

  function jobResource(job: QueryJob, state: 'RUNNING' | 'DONE') {
    return {
      kind: 'bigquery#job',
      id: `${job.projectId}:${job.location}.${job.jobId}`,
      jobReference: { projectId: job.projectId, jobId: job.jobId, location: job.location },
      configuration: job.configuration,
      status: { state },
    };
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  function createJob(projectId: string, body: any, jobId: string, location: string | undefined): QueryJob {
    const configuration = body.configuration ?? {};
    const job: QueryJob = { jobId, projectId, location: location ?? 'US', createdAt: Date.now(), configuration, plan: plan(String(configuration.query?.query ?? ''), { configuration }) };
    jobs.set(jobId, job);
    return job;
  }

  /** When the job ends (done or stopped by its jobTimeoutMs), and how. */
  function outcome(job: QueryJob): { at: number; stopped: boolean } {
    const doneAt = job.createdAt + (job.plan.runMs ?? 0);
    const limit = job.configuration.jobTimeoutMs === undefined ? Infinity : job.createdAt + Number(job.configuration.jobTimeoutMs);
    return doneAt <= limit ? { at: doneAt, stopped: false } : { at: limit, stopped: true };
  }

  function results(job: QueryJob, kind: string): Reply {
    const end = outcome(job);
    const jobReference = { projectId: job.projectId, jobId: job.jobId, location: job.location };
    if (Date.now() < end.at) return { status: 200, body: { kind, jobReference, jobComplete: false } };
    if (end.stopped) return errorReply(400, 'timeout', `Job execution was cancelled: Job timed out after ${Number(job.configuration.jobTimeoutMs) / 1000} s`);
    const fields = job.plan.schema ?? [];
    const rows = (job.plan.rows ?? []).map((r) => ({ f: r.map((v) => ({ v })) }));
    return { status: 200, body: { kind, jobReference, jobComplete: true, schema: { fields: fields.map((f) => ({ ...f, mode: 'NULLABLE' })) }, rows, totalRows: String(rows.length), cacheHit: false } };
  }

  /** Waits up to `timeoutMs` (the API's default 10 s) for the job, then answers with what there is. */
  function afterWait(job: QueryJob, timeoutMs: string | undefined, answer: () => void): void {
    const wait = Math.min(timeoutMs === undefined ? 10_000 : Number(timeoutMs), Math.max(0, outcome(job).at - Date.now()));
    const t = setTimeout(() => {
      timers.delete(t);
      answer();
    }, wait);
    timers.add(t);
  }

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const send = (r: Reply) => {
      if (res.destroyed) return;
      res.writeHead(r.status, { 'content-type': 'application/json; charset=UTF-8' });
      res.end(JSON.stringify(r.body));
    };
    void readBody(req).then((text) => {
      const url = new URL(req.url ?? '/', 'http://stand-in');
      const path = url.pathname.replace(/^\/bigquery\/v2(?=\/)/, '');
      const query = Object.fromEntries(url.searchParams);
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        return send(errorReply(400, 'parseError', 'Parse Error'));
      }
      requests.push({ method: req.method ?? 'GET', path, query, headers: req.headers, body });
      let m: RegExpExecArray | null;
      if (req.method === 'POST' && (m = /^\/projects\/([^/]+)\/datasets\/([^/]+)\/tables\/([^/]+)\/insertAll$/.exec(path))) {
        return send(insertAll(`${m[1]}.${m[2]}.${m[3]}`, (body ?? {}) as Parameters<typeof insertAll>[1]));
      }
      if (req.method === 'POST' && (m = /^\/projects\/([^/]+)\/jobs$/.exec(path))) {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const b = (body ?? {}) as any;
        if (!b.configuration?.query) return send(errorReply(400, 'invalid', 'The stand-in runs query jobs only'));
        const jobId = String(b.jobReference?.jobId ?? `job_${Math.random().toString(36).slice(2)}`);
        if (jobs.has(jobId)) return send(errorReply(409, 'duplicate', `Already Exists: Job ${m[1]}:${jobId}`));
        const job = createJob(m[1]!, b, jobId, b.jobReference?.location);
        return send({ status: 200, body: jobResource(job, Date.now() >= outcome(job).at ? 'DONE' : 'RUNNING') });
      }
      if (req.method === 'GET' && (m = /^\/projects\/([^/]+)\/queries\/([^/]+)$/.exec(path))) {
        const job = jobs.get(m[2]!);
        if (!job) return send(errorReply(404, 'notFound', `Not found: Job ${m[1]}:${m[2]}`));
        return afterWait(job, query.timeoutMs, () => send(results(job, 'bigquery#getQueryResultsResponse')));
      }
      if (req.method === 'POST' && (m = /^\/projects\/([^/]+)\/queries$/.exec(path))) {
        // eslint-disable-next-line @typescript-eslint/no-explicit-any
        const b = (body ?? {}) as any;
        const { timeoutMs, location, ...request } = b;
        const job = createJob(m[1]!, { configuration: { query: request, ...(b.jobTimeoutMs ? { jobTimeoutMs: b.jobTimeoutMs } : {}) } }, `job_${Math.random().toString(36).slice(2)}`, location);
        return afterWait(job, timeoutMs === undefined ? undefined : String(timeoutMs), () => send(results(job, 'bigquery#queryResponse')));
      }
      if (req.method === 'POST' && (m = /^\/projects\/([^/]+)\/jobs\/([^/]+)\/cancel$/.exec(path))) {
        const job = jobs.get(m[2]!);
        if (!job) return send(errorReply(404, 'notFound', `Not found: Job ${m[1]}:${m[2]}`));
        job.plan = { ...job.plan, runMs: Math.min(job.plan.runMs ?? 0, Date.now() - job.createdAt) };
        return send({ status: 200, body: { kind: 'bigquery#jobCancelResponse', job: jobResource(job, 'DONE') } });
      }
      return send(errorReply(404, 'notFound', `The stand-in does not serve ${req.method} ${path}`));
    }, () => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    requests,
    inserts: () => requests.filter((r) => r.path.endsWith('/insertAll')),
    rows: (table) => [...(tables.get(table)?.values() ?? [])],
    jobs,
    refuseRows: (check) => {
      refuse = check;
    },
    failInserts: (error, times = Infinity) => {
      failing = { error, remaining: times };
    },
    answerQueries: (p) => {
      plan = p;
    },
    close: async () => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
