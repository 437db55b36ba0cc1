'use strict';
// The Express side of tests/interop and of bench/http_load.py and bench/deployed.py: the same
// routes as wsgi_app.py, plus /read (the session's views, unchanged) for the benchmarks, and
// /slow/set and /slow/incr (at the end) for bench/concurrency.py.
//
// Options come from the environment, so the Python suite can start one process per configuration:
//   PORT            port to listen on (127.0.0.1 only)
//   SESSION_STORE   "redis" (connect-redis, default), "pg" (connect-pg-simple), "memory"
//                   (express-session's MemoryStore) or "none" (bare Express: /incr counts in a
//                   global, for the benchmark baseline)
//   REDIS_URL       redis://127.0.0.1:<port>/0 for SESSION_STORE=redis
//   DATABASE_URL    postgresql://... for SESSION_STORE=pg (table "session", created if missing)
//   SECRETS         JSON list of secrets; the first signs, all verify (express-session's `secret`)
//   MAX_AGE         cookie.maxAge in milliseconds; unset or empty = browser-session cookie
//   ROLLING         "1" for rolling: true
//   EXPRESS         "5" for Express 5 (package.json's alias express5); unset, empty or "4" for Express 4
// Prints "listening <port> express <version>" on stdout when ready.
const env = process.env;
const expressPackage = { '': 'express', 4: 'express', 5: 'express5' }[env.EXPRESS || ''];
if (!expressPackage) throw new Error('EXPRESS must be 4 or 5');
const express = require(expressPackage);
const expressVersion = require(`${expressPackage}/package.json`).version;
const session = require('express-session');

const port = Number(env.PORT || 3000);
const mode = env.SESSION_STORE || 'redis';
const secrets = JSON.parse(env.SECRETS || '["keyboard cat"]');
const maxAge = env.MAX_AGE ? Number(env.MAX_AGE) : null;

function typeName(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'float';
  return typeof value;
}

async function main() {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  let client = null;
  let pgStore = null;

  if (mode === 'none') {
    let views = 0;
    app.get('/incr', (req, res) => res.json({ views: ++views }));
    app.get('/read', (req, res) => res.json({ views }));
  } else {
    let store;
    if (mode === 'redis') {
      const { createClient } = require('redis');
      const { RedisStore } = require('connect-redis');
      client = createClient({ url: env.REDIS_URL });
      client.on('error', (err) => console.error('redis:', err.message));
      await client.connect();
      store = new RedisStore({ client });
    } else if (mode === 'pg') {
      const PgStore = require('connect-pg-simple')(session);
      store = pgStore = new PgStore({ conString: env.DATABASE_URL, createTableIfMissing: true,
        errorLog: (...args) => console.error('pg:', ...args) });
    } else if (mode !== 'memory') {
      throw new Error('SESSION_STORE must be redis, pg, memory or none');
    }
    app.use(session({
      secret: secrets,
      store,
      resave: false,
      saveUninitialized: false,
      rolling: env.ROLLING === '1',
      cookie: maxAge == null ? {} : { maxAge },
    }));

    app.get('/login', (req, res, next) => {
      req.session.regenerate((err) => {
        if (err) return next(err);
        req.session.user = String(req.query.user);
        res.json({ user: req.session.user, id: req.sessionID });
      });
    });
    app.get('/whoami', (req, res) => {
      res.json({ user: req.session.user === undefined ? null : req.session.user, id: req.sessionID });
    });
    app.get('/incr', (req, res) => {
      req.session.views = (req.session.views || 0) + 1;
      res.json({ views: req.session.views });
    });
    app.get('/read', (req, res) => res.json({ views: req.session.views || 0 }));
    app.get('/put', (req, res) => {
      Object.assign(req.session, JSON.parse(req.query.data));
      res.json({ id: req.sessionID });
    });
    app.get('/cookie', (req, res) => {  // cookie fields set as an app does (expires = false...)
      Object.assign(req.session.cookie, JSON.parse(req.query.set));
      req.session.user = String(req.query.user);
      res.json({ id: req.sessionID });
    });
    app.get('/raw', (req, res) => {
      const session = JSON.parse(JSON.stringify(req.session));
      const types = {};
      for (const key of Object.keys(session)) if (key !== 'cookie') types[key] = typeName(session[key]);
      res.json({ id: req.sessionID, session, types });
    });
    app.get('/logout', (req, res, next) => {
      req.session.destroy((err) => (err ? next(err) : res.json({ ok: true })));
    });

    // For bench/concurrency.py only: requests that wait MS milliseconds (a "database call")
    // after the session was loaded, then change it, as tests/concurrency_app.py's /set and /incr.
    const after = (ms) => new Promise((resolve) => setTimeout(resolve, Number(ms) || 0));
    app.get('/slow/set', async (req, res) => {
      await after(req.query.ms);
      req.session[req.query.key] = String(req.query.value);
      res.json({ id: req.sessionID });
    });
    app.get('/slow/incr', async (req, res) => {
      await after(req.query.ms);
      req.session[req.query.key] = (req.session[req.query.key] || 0) + 1;
      res.json({ id: req.sessionID });
    });
  }

  const server = app.listen(port, '127.0.0.1', (err) => {  // Express 5 passes listen's error here
    if (err) throw err;
    console.log(`listening ${port} express ${expressVersion}`);
  });
  const stop = () => {
    server.close();
    server.closeAllConnections && server.closeAllConnections();
    Promise.all([client && client.quit(), pgStore && pgStore.close()])
      .catch(() => {}).finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
