/**
 * The tracking benchmark's end-to-end load (part 3): an open loop of clicks and postbacks sent to the hit
 * functions, and a sample of them followed through the API until each is visible.
 */
import { latencySummary } from './load';
import { browserUserAgent, visitorIpSource } from './closed-loop';
import { runWorker } from './worker';

/**
 * End to end, open loop: events leave at fixed times whatever the answers (a slow server does not slow the
 * sender down, unlike autocannon's closed loop), over keep-alive node:http connections, to the hit functions
 * at hitUrl. For a sample, the worker polls the API at apiUrl until the event is visible and records
 * (answer that showed it) - (request start). Runs on a worker thread (plain CommonJS, see worker.ts).
 */
const openLoopWorker = `
const http = require('node:http');
const { performance } = require('node:perf_hooks');
const { parentPort, workerData: d } = require('node:worker_threads');
const hit = new URL(d.hitUrl);
const api = new URL(d.apiUrl);
const sendAgent = new http.Agent({ keepAlive: true, maxSockets: 2048 });
const pollAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const now = () => performance.now();
const sleep = (t) => new Promise((r) => setTimeout(r, t));
${visitorIpSource}
const auth = { authorization: 'Bearer ' + d.token };

function get(target, agent, path, headers, timeoutMs) {
  return new Promise((resolve) => {
    const started = now();
    const done = (r) => resolve(Object.assign({ started, ended: now() }, r));
    const req = http.request({ host: target.hostname, port: target.port, path, method: 'GET', agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => done({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', (e) => done({ status: 0, error: String(e) }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => done({ status: 0, error: String(e) }));
    req.end();
  });
}

const total = Math.max(1, Math.round(d.rate * d.seconds));
const cycle = d.clicksPerPostback > 0 ? d.clicksPerPostback + 1 : 0;
const out = {
  total, clicksSent: 0, postbacksSent: 0, clickStatus: {}, postbackStatus: {}, clickLatency: [], postbackLatency: [], sendLag: [],
  firstSend: 0, lastSend: 0, lastAnswer: 0, inFlightMax: 0,
  samples: [], polls: 0, pollLatency: [], pollErrors: 0, reportPolls: 0, reportPollLatency: [], listPolls: 0, listPollLatency: [], deepSeen: 0, pollStart: 0, pollEnd: 0, followersMax: 0, pollWait: [],
};
let inFlight = 0;
let clickNo = 0;
let postbackNo = 0;
let generating = true;
let hardDeadline = Infinity;
const reportPending = new Map();
const conversionPending = new Map();

// Followed events are polled by one scheduler with a budget (polls per second, at most 16 in flight), so
// that a growing backlog cannot turn the measurement into a load of its own: when many events are waiting,
// each is polled less often (coarser resolution), and the output says so.
const followers = new Set();
let pollsInFlight = 0;
let tokens = 1;
let refilled = now();
function interval(age) { return age < 2000 ? d.pollMs : Math.min(1000, Math.max(d.pollMs, age / 8)); }
function follow(path, sentAt) {
  return new Promise((resolve) => {
    if (now() > hardDeadline) { resolve(undefined); return; }
    followers.add({ path, sentAt, due: now() + d.pollMs, resolve });
    if (followers.size > out.followersMax) out.followersMax = followers.size;
  });
}
function pump() {
  const t = now();
  tokens = Math.min(Math.max(2, d.pollBudget / 5), tokens + ((t - refilled) * d.pollBudget) / 1000);
  refilled = t;
  if (t > hardDeadline) { for (const f of followers) f.resolve(undefined); followers.clear(); return; }
  if (tokens < 1 || pollsInFlight >= 16) return;
  const due = [...followers].filter((f) => f.due <= t).sort((a, b) => a.due - b.due);
  for (const f of due) {
    if (tokens < 1 || pollsInFlight >= 16) break;
    tokens -= 1;
    pollsInFlight++;
    out.pollWait.push(t - f.due);
    f.due = Infinity;
    get(api, pollAgent, f.path, auth, 10000).then((r) => {
      pollsInFlight--;
      out.polls++;
      out.pollLatency.push(r.ended - r.started);
      if (r.status === 200) { followers.delete(f); f.resolve(r.ended); return; }
      if (r.status !== 404) out.pollErrors++;
      f.due = now() + interval(now() - f.sentAt);
    });
  }
}

async function reportLoop() {
  while (generating || inFlight > 0 || reportPending.size) {
    await sleep(d.reportPollMs);
    if (now() > hardDeadline) break;
    if (!reportPending.size) continue;
    const r = await get(api, pollAgent, d.reportPath, auth, 20000);
    out.reportPolls++;
    out.reportPollLatency.push(r.ended - r.started);
    if (r.status !== 200) { out.pollErrors++; continue; }
    for (const row of JSON.parse(r.body).rows) {
      const s = reportPending.get(row.sub1);
      if (s && row.clicks > 0) { s.reportAt = r.ended; reportPending.delete(row.sub1); }
    }
  }
}

// The conversion list, as a user watches it: newest first, from a watermark 3 s before the newest
// conversion seen so far, paging on while a page is full. One query serves every followed postback.
// createdAt is the postback's time, and under load a booking commits later, below the newest seen: within
// 3 s the frequent query still finds it; past that, a deeper query every 2 s looks 15 s back (a conversion
// first seen there was late by up to those 2 s more, which the delay then includes; counted in deepSeen).
async function conversionLoop() {
  let newest = '';
  let lastDeep = now();
  // Runs on while a request is unanswered too: the last postback's answer, and so its conversion id, can
  // come after every earlier one was seen (the idle baseline, 4 postbacks, lost its last one so).
  while (generating || inFlight > 0 || conversionPending.size) {
    await sleep(d.pollMs);
    if (now() > hardDeadline) break;
    if (!conversionPending.size) continue;
    const deep = now() - lastDeep >= 2000;
    if (deep) lastDeep = now();
    const from = newest ? new Date(Date.parse(newest) - (deep ? 15000 : 3000)).toISOString() : '';
    let cursor = '';
    for (let page = 0; page < 50; page++) {
      const r = await get(api, pollAgent, d.conversionsPath + (from ? '&from=' + encodeURIComponent(from) : '') + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''), auth, 20000);
      out.listPolls++;
      out.listPollLatency.push(r.ended - r.started);
      if (r.status !== 200) { out.pollErrors++; break; }
      const body = JSON.parse(r.body);
      for (const c of body.items) {
        const s = conversionPending.get(c.id);
        if (s) { s.conversionAt = r.ended; conversionPending.delete(c.id); if (deep) out.deepSeen++; }
        if (c.createdAt > newest) newest = c.createdAt;
      }
      if (!body.nextCursor) break;
      cursor = body.nextCursor;
    }
  }
}

const following = [];
function fire(i, scheduled) {
  const sentAt = now();
  out.sendLag.push(sentAt - scheduled);
  if (!out.firstSend) out.firstSend = sentAt;
  out.lastSend = sentAt;
  inFlight++;
  if (inFlight > out.inFlightMax) out.inFlightMax = inFlight;
  const isPostback = cycle > 0 && i % cycle === cycle - 1;
  if (!isPostback) {
    const c = clickNo++;
    out.clicksSent++;
    const sampled = c % d.sampleClicks === 0;
    const sub1 = sampled ? d.tag + '-' + c : d.tag + '-bulk';
    get(hit, sendAgent, '/c/' + d.linkId + '?sub1=' + encodeURIComponent(sub1), { 'user-agent': d.userAgent, 'x-forwarded-for': ipOf(d.ipStart + c) }, 30000).then((r) => {
      inFlight--;
      out.lastAnswer = r.ended;
      out.clickStatus[r.status] = (out.clickStatus[r.status] || 0) + 1;
      out.clickLatency.push(r.ended - r.started);
      if (!sampled || r.status !== 302) return;
      const clickId = new URL(r.headers.location).searchParams.get('cid');
      const s = { kind: 'click', sentAt: r.started, answeredAt: r.ended };
      out.samples.push(s);
      reportPending.set(sub1, s);
      following.push(follow('/v1/orgs/' + d.orgId + '/clicks/' + encodeURIComponent(clickId), r.started).then((t) => { s.firestoreAt = t; }));
    });
  } else {
    const p = postbackNo++;
    out.postbacksSent++;
    const sampled = p % d.samplePostbacks === 0;
    const clickId = d.clickIds[p % d.clickIds.length];
    const path = '/postback?token=' + encodeURIComponent(d.postbackToken) + '&click_id=' + encodeURIComponent(clickId) + '&txn_id=' + d.tag + '-' + p + '&amount=10.00';
    get(hit, sendAgent, path, { 'user-agent': 'advertiser-server/1.0' }, 30000).then((r) => {
      inFlight--;
      out.lastAnswer = r.ended;
      out.postbackStatus[r.status] = (out.postbackStatus[r.status] || 0) + 1;
      out.postbackLatency.push(r.ended - r.started);
      if (!sampled || r.status !== 200) return;
      const id = JSON.parse(r.body).conversionId;
      const s = { kind: 'postback', sentAt: r.started, answeredAt: r.ended };
      out.samples.push(s);
      conversionPending.set(id, s);
    });
  }
}

async function main() {
  const period = 1000 / d.rate;
  const t0 = now() + 20;
  out.pollStart = t0;
  const pumping = setInterval(pump, 5);
  const reporting = reportLoop();
  const listing = conversionLoop();
  let next = 0;
  while (next < total) {
    const t = now();
    while (next < total && t0 + next * period <= t) { fire(next, t0 + next * period); next++; }
    if (next < total) await sleep(Math.max(0, Math.min(4, t0 + next * period - now())));
  }
  generating = false;
  hardDeadline = now() + d.settleMs;
  // Wait for every answer, then for every followed event (or the deadline).
  while (inFlight > 0 && now() < hardDeadline) await sleep(20);
  while (followers.size && now() <= hardDeadline + 50) await sleep(20);
  pump();
  await Promise.all(following);
  await reporting;
  await listing;
  clearInterval(pumping);
  out.pollEnd = now();
  out.unanswered = inFlight;
  out.reportUnseen = reportPending.size;
  out.listUnseen = conversionPending.size;
  out.t0 = t0;
  parentPort.postMessage(out);
}
main().catch((err) => parentPort.postMessage({ error: String((err && err.stack) || err) }));
`;

export interface OpenLoopSample {
  kind: 'click' | 'postback';
  sentAt: number;
  answeredAt: number;
  firestoreAt?: number;
  reportAt?: number;
  conversionAt?: number;
}

export interface OpenLoopReply {
  total: number;
  clicksSent: number;
  postbacksSent: number;
  clickStatus: Record<string, number>;
  postbackStatus: Record<string, number>;
  clickLatency: number[];
  postbackLatency: number[];
  sendLag: number[];
  firstSend: number;
  lastSend: number;
  lastAnswer: number;
  inFlightMax: number;
  samples: OpenLoopSample[];
  polls: number;
  pollLatency: number[];
  pollErrors: number;
  reportPolls: number;
  reportPollLatency: number[];
  /** Conversion list queries (each page counts), and how long each took to answer. */
  listPolls: number;
  listPollLatency: number[];
  /** Followed postbacks first seen by the deep (15 s back) conversion list query: their delay is coarser. */
  deepSeen: number;
  followersMax: number;
  /** How long each poll waited past its due time for the budget: the resolution lost to it. */
  pollWait: number[];
  pollStart: number;
  pollEnd: number;
  unanswered: number;
  reportUnseen: number;
  listUnseen: number;
  t0: number;
}

export interface OpenLoopOptions {
  /** Where the clicks and postbacks go: the hit functions. */
  hitUrl: string;
  /** Where the followed events are looked up: the stack's API. */
  apiUrl: string;
  orgId: string;
  token: string;
  linkId: string;
  campaignId: string;
  postbackToken: string;
  clickIds: string[];
  rate: number;
  seconds: number;
  clicksPerPostback: number;
  sampleClicks: number;
  samplePostbacks: number;
  pollMs: number;
  pollBudget: number;
  reportPollMs: number;
  settleSeconds: number;
  tag: string;
  ipStart: number;
}

export function openLoop(o: OpenLoopOptions, signal: AbortSignal): Promise<OpenLoopReply> {
  const today = new Date().toISOString().slice(0, 10);
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
  return runWorker<OpenLoopReply>(
    openLoopWorker,
    {
      ...o,
      settleMs: o.settleSeconds * 1000,
      userAgent: browserUserAgent,
      reportPath: `/v1/orgs/${o.orgId}/reports?from=${today}&to=${tomorrow}&groupBy=sub1&campaignId=${encodeURIComponent(o.campaignId)}`,
      conversionsPath: `/v1/orgs/${o.orgId}/conversions?campaignId=${encodeURIComponent(o.campaignId)}&limit=200`,
    },
    signal,
  );
}

export const sortedOf = (xs: number[]) => Float64Array.from(xs).sort();

export interface DelayStats {
  n: number;
  seen: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/**
 * The same delays by when the event was sent, in windows of `windowMs` from the first send: whether a p99
 * comes from the whole run or from a stretch of it (the first seconds of a run, say).
 */
export function delaysBySendTime(samples: OpenLoopSample[], kind: OpenLoopSample['kind'], at: 'firestoreAt' | 'reportAt' | 'conversionAt', firstSend: number, windowMs: number): DelayStats[] {
  const windows: OpenLoopSample[][] = [];
  for (const s of samples) (windows[Math.floor(Math.max(0, s.sentAt - firstSend) / windowMs)] ??= []).push(s);
  return Array.from(windows, (w) => delays(w ?? [], kind, at));
}

export function delays(samples: OpenLoopSample[], kind: OpenLoopSample['kind'], at: 'firestoreAt' | 'reportAt' | 'conversionAt' | 'answeredAt'): DelayStats {
  const mine = samples.filter((s) => s.kind === kind);
  const all = mine.map((s) => (s[at] === undefined || s[at] === null ? Number.POSITIVE_INFINITY : s[at]! - s.sentAt));
  const sorted = sortedOf(all);
  const seen = all.filter(Number.isFinite).length;
  return { n: mine.length, seen, ...latencySummary(sorted) };
}
