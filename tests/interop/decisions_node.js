'use strict';
// Differential harness, express side: reads a JSON list of scenarios on stdin, runs each
// through a real express + express-session 1.19 app (its own server on 127.0.0.1, a free port)
// over a recording in-memory store, and prints one JSON outcome per scenario on stdout: per
// request what decisions_py.py's run_scenario gives for ours, the store's records at the end,
// and the Express version that ran it. Express 4, or 5 with EXPRESS=5 (as app.js).
// decisions_diff.py generates the scenarios, runs both sides and compares; by hand:
//
//     [EXPRESS=5] node tests/interop/decisions_node.js < scenarios.json > express.json
//
// (needs `npm ci` in tests/interop).
const crypto = require('crypto');
const http = require('http');
const expressPackage = { '': 'express', 4: 'express', 5: 'express5' }[process.env.EXPRESS || ''];
if (!expressPackage) throw new Error('EXPRESS must be 4 or 5');
const express = require(expressPackage);
const expressVersion = require(`${expressPackage}/package.json`).version;
const session = require('express-session');

const SECRET = 'keyboard cat';

// cookie-signature's sign(): the value, '.', and its HMAC-SHA256 in base64 without padding.
function sign(value, secret) {
  return value + '.' + crypto.createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '');
}

class RecordingStore extends session.Store {
  constructor() {
    super();
    this.data = new Map();
    this.calls = [];
  }
  _live(sid) {
    const text = this.data.get(sid);
    if (text === undefined) return undefined;
    const rec = JSON.parse(text);
    const exp = rec.cookie && rec.cookie.expires ? new Date(rec.cookie.expires) : null;
    if (exp && exp <= Date.now()) { this.data.delete(sid); return undefined; }  // as MemoryStore
    return rec;
  }
  get(sid, cb) {
    const rec = this._live(sid);
    this.calls.push(['get', sid, rec === undefined ? null : 'hit']);
    setImmediate(cb, null, rec);
  }
  set(sid, sess, cb) {
    this.data.set(sid, JSON.stringify(sess));
    this.calls.push(['set', sid, JSON.parse(JSON.stringify(sess))]);
    setImmediate(cb, null);
  }
  touch(sid, sess, cb) {
    const rec = this._live(sid);
    if (rec) {  // as express's MemoryStore: the stored record gets the session's cookie
      rec.cookie = sess.cookie;
      this.data.set(sid, JSON.stringify(rec));
    }
    this.calls.push(['touch', sid, rec ? JSON.parse(JSON.stringify(rec)) : null]);
    setImmediate(cb, null);
  }
  destroy(sid, cb) {
    this.data.delete(sid);
    this.calls.push(['destroy', sid, null]);
    setImmediate(cb, null);
  }
}

function dataOf(sess) {
  if (sess == null) return null;
  const out = {};
  for (const k of Object.keys(sess)) if (k !== 'cookie') out[k] = sess[k];
  return JSON.parse(JSON.stringify(out));
}

function p(fn) { return new Promise((resolve) => fn((err) => resolve(err || null))); }

async function runActions(req, actions) {
  const notes = [];
  for (const a of actions) {
    const s = req.session;
    if (s == null) { notes.push('skip'); continue; }
    switch (a[0]) {
      case 'read': notes.push(s[a[1]] === undefined ? null : s[a[1]]); break;
      case 'write': s[a[1]] = JSON.parse(JSON.stringify(a[2])); break;
      case 'writeSame': if (Object.prototype.hasOwnProperty.call(s, a[1])) s[a[1]] = s[a[1]]; break;
      case 'append': if (Array.isArray(s[a[1]])) s[a[1]].push(1); else s[a[1]] = [1]; break;
      case 'delete': delete s[a[1]]; break;
      case 'regenerate': notes.push((await p((cb) => s.regenerate(cb))) ? 'err' : 'ok'); break;
      case 'destroy': notes.push((await p((cb) => s.destroy(cb))) ? 'err' : 'ok'); break;
      case 'null': req.session = null; break;
      case 'touch': s.touch(); break;
      case 'save': notes.push((await p((cb) => s.save(cb))) ? 'err' : 'ok'); break;
      case 'reload': notes.push((await p((cb) => s.reload(cb))) ? 'err' : 'ok'); break;
      case 'maxAge': s.cookie.maxAge = a[1]; break;
      case 'move': if (Object.prototype.hasOwnProperty.call(s, a[1])) { const v = s[a[1]]; delete s[a[1]]; s[a[1]] = v; } break;
      case 'httpOnly': s.cookie.httpOnly = a[1]; break;
      case 'sameSite': s.cookie.sameSite = a[1]; break;
      case 'expiresIn': s.cookie.expires = new Date(Date.now() + a[1]); break;
      case 'clear': for (const k of Object.keys(s)) if (k !== 'cookie') delete s[k]; break;
      case 'nothing': break;
      default: throw new Error('unknown action ' + a[0]);
    }
  }
  return notes;
}

function makeApp(sc, store) {
  const o = sc.options;
  const cookie = { httpOnly: o.httpOnly, path: '/' };
  if (o.maxAge !== null) cookie.maxAge = o.maxAge;
  if (o.sameSite !== null) cookie.sameSite = o.sameSite;
  const app = express();
  app.use(session({
    secret: SECRET, name: o.name, store, resave: o.resave, saveUninitialized: o.saveUninitialized,
    rolling: o.rolling, unset: o.unset, cookie,
  }));
  app.get('/r/:i', async (req, res) => {
    const step = sc.requests[Number(req.params.i)];
    const seen = dataOf(req.session);
    const seenOMA = req.session && req.session.cookie ? req.session.cookie.originalMaxAge : null;
    const seenCookie = req.session ? { httpOnly: req.session.cookie.httpOnly, sameSite: req.session.cookie.sameSite || null } : null;
    const notes = await runActions(req, step.actions);
    res.status(200).type('application/json').end(JSON.stringify({ seen, seenOMA, seenCookie, notes }));
  });
  return app;
}

function request(port, path, cookieHeader) {
  return new Promise((resolve, reject) => {
    const headers = {};
    if (cookieHeader) headers.Cookie = cookieHeader;
    const r = http.request({ host: '127.0.0.1', port, path, method: 'GET', headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, setCookie: res.headers['set-cookie'] || [],
                                    body: Buffer.concat(chunks).toString() }));
    });
    r.on('error', reject);
    r.end();
  });
}

function parseSetCookie(raw) {
  const parts = raw.split('; ');
  const eq = parts[0].indexOf('=');
  const out = { name: parts[0].slice(0, eq), value: parts[0].slice(eq + 1), attrs: {} };
  for (const part of parts.slice(1)) {
    const i = part.indexOf('=');
    if (i < 0) out.attrs[part.toLowerCase()] = true; else out.attrs[part.slice(0, i).toLowerCase()] = part.slice(i + 1);
  }
  return out;
}

async function runScenario(sc) {
  const store = new RecordingStore();
  const app = makeApp(sc, store);
  const server = http.createServer(app);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  const jar = {};
  let firstCookie = null;
  const results = [];
  try {
    for (let i = 0; i < sc.requests.length; i++) {
      const step = sc.requests[i];
      let value = null;
      if (step.cookie === 'jar') value = jar[sc.options.name] || null;
      else if (step.cookie === 'old') value = firstCookie;
      else if (step.cookie === 'unknown') value = encodeURIComponent('s:' + sign('nosuchid', SECRET));
      if ((step.cookie === 'old' || step.cookie === 'unknown') && value) jar[sc.options.name] = value;
      store.calls = [];
      const at = Date.now();
      const resp = await request(port, '/r/' + i, value ? sc.options.name + '=' + value : null);
      const done = Date.now();
      const cookies = resp.setCookie.map(parseSetCookie).filter((c) => c.name === sc.options.name);
      for (const c of cookies) {
        const exp = c.attrs.expires ? Date.parse(c.attrs.expires) : null;
        const clears = ('max-age' in c.attrs && Number(c.attrs['max-age']) <= 0) || (exp !== null && exp <= Date.now());
        if (clears) delete jar[c.name]; else { jar[c.name] = c.value; if (firstCookie === null) firstCookie = c.value; }
      }
      let body; try { body = JSON.parse(resp.body); } catch (e) { body = { raw: resp.body }; }
      results.push({ status: resp.status, setCookie: resp.setCookie, calls: store.calls, body,
                     sentCookie: value, at, done });
    }
    const final = {};
    for (const [sid, text] of store.data) final[sid] = JSON.parse(text);
    return { requests: results, final, finalAt: Date.now(), express: expressVersion };
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

async function main() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  const scenarios = JSON.parse(Buffer.concat(chunks).toString());
  const out = [];
  for (const sc of scenarios) out.push(await runScenario(sc));
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
