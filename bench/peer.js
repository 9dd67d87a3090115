// Benchmark peer (issue 19): what a user who would not write Rust writes as an Azure Functions
// custom handler in Node.js (the Azure samples' language). It answers the handler's
// forwarding-mode request `GET /api/reports/{name}?date=YYYY-MM-DD` with the same JSON document
// shape, from the same SQLite file, with the same API-key check and the same caching rule
// (the rendered body of an ended window is kept with a strong ETag; an open window is run
// every time). Not part of the product or of `cargo test`: scripts/bench.sh runs it.
//
// Usage: API_KEYS=... FUNCTIONS_CUSTOMHANDLER_PORT=7072 node peer.js APP_ROOT
//        (APP_ROOT holds reports.toml and data/sample.sqlite, which the handler creates)
//
// Simplifications, said plainly: only `window = "previous_day"` reports and `?date=` are
// served; a column's label is its name and its format null (the handler adds the configured
// ones); TOML is read by a small line reader that knows only the keys used here.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const Database = require('better-sqlite3');

const root = process.argv[2] || process.env.FUNCTIONS_APP_ROOT_PATH || '.';
const port = Number(process.env.FUNCTIONS_CUSTOMHANDLER_PORT || 7072);
const keys = (process.env.API_KEYS || '')
  .split(/[\s,]+/)
  .filter((k) => k.length > 0)
  .map((k) => crypto.createHash('sha256').update(k).digest());
const MAX_ROWS = Number(process.env.MAX_ROWS || 1000000);
const CACHE_ENTRIES = 256;

// --- reports.toml: [[reports]] name/title/time_zone/window, [[reports.sections]] title/query.
function readReports(file) {
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n');
  const reports = [];
  let report = null;
  let section = null;
  let table = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line.startsWith('[')) {
      table = line;
      if (line === '[[reports]]') {
        report = { name: '', title: '', time_zone: 'UTC', window: 'previous_day', sections: [] };
        reports.push(report);
        section = null;
      } else if (line === '[[reports.sections]]' && report) {
        section = { title: '', query: '' };
        report.sections.push(section);
      }
      continue;
    }
    const m = /^([a-z_]+)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let [, key, value] = m;
    if (value.startsWith('"""')) {
      const parts = [value.slice(3)];
      while (!parts[parts.length - 1].includes('"""') && i + 1 < lines.length) {
        parts.push(lines[++i]);
      }
      value = parts.join('\n');
      value = value.slice(0, value.indexOf('"""')).replace(/^\n/, '');
    } else if (value.startsWith('"')) {
      value = JSON.parse(value.slice(0, value.indexOf('"', 1) + 1));
    } else {
      continue;
    }
    if (table === '[[reports.sections]]' && section) {
      if (key === 'title' || key === 'query') section[key] = value;
    } else if (table === '[[reports]]' && report) {
      if (['name', 'title', 'time_zone', 'window'].includes(key)) report[key] = value;
    }
  }
  return new Map(reports.map((r) => [r.name, r]));
}

// --- windows: the local day `date` in the report's zone, as UTC instants.
function zoneOffsetMs(t, timeZone) {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).formatToParts(new Date(t));
  const v = Object.fromEntries(parts.map((p) => [p.type, Number(p.value)]));
  return Date.UTC(v.year, v.month - 1, v.day, v.hour, v.minute, v.second) - t;
}
function localMidnightUtc(y, m, d, timeZone) {
  const guess = Date.UTC(y, m - 1, d);
  let t = guess - zoneOffsetMs(guess, timeZone);
  t = guess - zoneOffsetMs(t, timeZone);
  return t;
}
const sqlText = (t) => new Date(t).toISOString().slice(0, 19).replace('T', ' ');
const rfc3339 = (t) => new Date(t).toISOString().replace('.000Z', 'Z');

// --- the JSON document, in the handler's shape.
const declared = { INTEGER: 'integer', REAL: 'float', TEXT: 'text', DATETIME: 'timestamp', DATE: 'date', BOOLEAN: 'bool' };
function typeOf(col, rows, i) {
  if (col.type && declared[col.type.toUpperCase()]) return declared[col.type.toUpperCase()];
  for (const r of rows) {
    const v = r[i];
    if (v === null || v === undefined) continue;
    if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'float';
    if (typeof v === 'bigint') return 'integer';
    return 'text';
  }
  return 'unknown';
}

const reports = readReports(path.join(root, 'reports.toml'));
const db = new Database(path.join(root, 'data', 'sample.sqlite'), { readonly: true, fileMustExist: true });
const statements = new Map();
function statement(sql) {
  let s = statements.get(sql);
  if (!s) {
    s = db.prepare(sql).raw(true);
    statements.set(sql, s);
  }
  return s;
}
const cache = new Map(); // `${name}|${date}` -> { body, etag }, ended windows only

function render(report, date) {
  const [y, m, d] = date.split('-').map(Number);
  const start = localMidnightUtc(y, m, d, report.time_zone);
  const end = localMidnightUtc(y, m, d + 1, report.time_zone);
  const params = { start: sqlText(start), end: sqlText(end), date };
  const sections = report.sections.map((sec) => {
    const stmt = statement(sec.query);
    const bind = {};
    for (const k of ['start', 'end', 'date']) if (sec.query.includes(':' + k)) bind[k] = params[k];
    const rows = [];
    let truncated = false;
    for (const row of stmt.iterate(bind)) {
      if (rows.length >= MAX_ROWS) { truncated = true; break; }
      rows.push(row);
    }
    const columns = stmt.columns().map((c, i) => ({ name: c.name, type: typeOf(c, rows, i), label: c.name, format: null }));
    return { title: sec.title, columns, rows, row_count: rows.length, truncated };
  });
  const body = JSON.stringify({
    report: report.name,
    title: report.title,
    window: { start: rfc3339(start), end: rfc3339(end), time_zone: report.time_zone, date },
    generated_at: new Date().toISOString(),
    sections,
  });
  const etag = '"' + crypto.createHash('sha256').update(body).digest('hex').slice(0, 32) + '"';
  return { body, etag, ended: end <= Date.now() };
}

function problem(res, status, title, detail, extra = {}) {
  res.writeHead(status, { 'content-type': 'application/problem+json; charset=utf-8', ...extra });
  res.end(JSON.stringify({ type: 'about:blank', title, status, detail }));
}

function authorised(req) {
  const auth = req.headers.authorization || '';
  const presented = auth.startsWith('Bearer ') ? auth.slice(7) : req.headers['x-api-key'];
  if (!presented) return false;
  const h = crypto.createHash('sha256').update(presented).digest();
  let ok = false;
  for (const k of keys) ok = crypto.timingSafeEqual(h, k) || ok;
  return ok;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/') return problem(res, 200, 'ready', 'ready');
  const m = /^\/api\/reports\/([a-z0-9-]+)$/.exec(url.pathname);
  if (!m) return problem(res, 404, 'Not found', 'no resource at this path');
  if (req.method !== 'GET' && req.method !== 'HEAD') return problem(res, 405, 'Method not allowed', req.method);
  if (keys.length === 0) return problem(res, 503, 'Endpoint not configured', 'no API keys are configured');
  if (!authorised(req)) return problem(res, 401, 'Unauthorized', 'present a valid API key', { 'www-authenticate': 'Bearer' });
  const report = reports.get(m[1]);
  if (!report) return problem(res, 404, 'Unknown report', `there is no report named \`${m[1]}\``);
  const date = url.searchParams.get('date') || '';
  if (!/^\d{4}-\d{2}-\d{2}$/.test(date)) return problem(res, 400, 'Bad parameter', 'date: expected YYYY-MM-DD');
  const key = `${report.name}|${date}`;
  let out = cache.get(key);
  if (!out) {
    try {
      out = render(report, date);
    } catch (e) {
      console.error(`report failed: ${e.message}`);
      return problem(res, 500, 'Internal error', 'the report could not be produced');
    }
    if (out.ended) {
      if (cache.size >= CACHE_ENTRIES) cache.delete(cache.keys().next().value);
      cache.set(key, out);
    }
  }
  const cacheControl = out.ended ? 'private, max-age=3600' : 'no-store';
  const inm = req.headers['if-none-match'];
  if (inm && inm.split(',').some((t) => t.trim() === out.etag || t.trim() === '*')) {
    res.writeHead(304, { etag: out.etag, 'cache-control': cacheControl });
    return res.end();
  }
  res.writeHead(200, {
    'content-type': 'application/json; charset=utf-8',
    etag: out.etag,
    'cache-control': cacheControl,
  });
  res.end(out.body);
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => console.log(`peer listening on 127.0.0.1:${port}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
