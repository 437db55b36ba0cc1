"""A small web app that shows what server-side sessions do, on the standard library.

    python http_demo.py                      # http://127.0.0.1:8000/, sessions in ./http_demo.sqlite3
    python http_demo.py --port 0             # any free port
    python http_demo.py --store memory       # or shelve:PATH, sqlite:PATH, redis://..., mongodb://...,
                                             # postgresql://...

Open the printed URL, reload the home page (the counter lives in the session),
log in under any name (watch the session ID change), then log out. Stop the
server with Ctrl-C and start it again: you are still logged in, because the
records live in the SQLite file and the secret that signs the cookies is kept
beside it (or comes from --secret / SESSION_SECRET).

The first half of this file is the app (what to copy); the second half is the
command line and the threaded wsgiref server that runs it.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import importlib.util
import ipaddress
import os
import secrets
import signal
import socket
import socketserver
import sys
import time
import urllib.parse
from collections.abc import Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import session

# --- Session configuration ------------------------------------------------------------

SESSION_OPTIONS = dict(
    name="connect.sid",           # express-session's default: an Express app can share the store
    cookie={
        "max_age": 3600,          # the cookie expires an hour after it was last sent, the record
                                  # an hour after the last request (each one moves its expiry)
        "http_only": True,        # page scripts cannot read the cookie, so an XSS bug cannot steal it
        "same_site": "lax",       # not sent with cross-site POSTs: other sites cannot act as the visitor
        "secure": "auto",         # HTTPS-only cookie whenever the page is served over HTTPS
    },
    save_uninitialized=False,     # no record and no cookie until the session holds something
    resave=False,                 # an unchanged session is not written back, only its expiry refreshed
    rolling=False,                # the cookie is re-sent only when the session changed
)

OPTIONS_EXPLAINED = [
    ("secret", "signs the cookie: a tampered or forged cookie is ignored and a fresh session starts"),
    ("max_age=3600", "the browser drops the cookie an hour after it was last sent, "
                     "and the store forgets an hour after the last request"),
    ("http_only=True", "JavaScript on the page cannot read the cookie (document.cookie does not show it)"),
    ("same_site='lax'", "other sites cannot post forms here with your cookie"),
    ("save_uninitialized=False", "visitors get no cookie and no record until there is something to keep"),
    ("store", "records live on the server; the cookie only carries their signed ID"),
]

MAX_FORM_BYTES = 1024
MAX_NAME_CHARS = 40


# --- The app ----------------------------------------------------------------------------

class ClientError(Exception):
    """A request the app refuses: the status line and a message for the visitor."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class DemoApp:
    """The pages. Each handler takes the WSGI environ and returns (status, headers, body)."""

    routes = {
        "/": {"GET": "home"},
        "/login": {"GET": "login_form", "POST": "login"},
        "/members": {"GET": "members"},
        "/logout": {"POST": "logout"},
    }

    def __init__(self, store_label: str, hosts: Iterable[str]):
        self.store_label = store_label
        self.hosts = frozenset(hosts)  # the Host header values this server answers to, e.g. "localhost:8000"

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        method = environ["REQUEST_METHOD"]
        handlers = self.routes.get(path, {})
        if "GET" in handlers:
            handlers = {**handlers, "HEAD": handlers["GET"]}  # HEAD is GET without the body
        try:
            check_host(environ, self.hosts)
            if not handlers:
                raise ClientError("404 Not Found", f"There is no page at {path}.")
            if method not in handlers:
                raise ClientError("405 Method Not Allowed", f"{path} does not accept {method}.")
            if method == "POST":
                check_same_origin(environ)
            status, headers, body = getattr(self, handlers[method])(environ)
        except ClientError as exc:
            status, headers, body = error_page(exc.status, exc.message, environ)
            if exc.status.startswith("405"):
                headers.append(("Allow", ", ".join(handlers)))
        if method == "HEAD" or not status.startswith(("2", "3")):
            # HEAD and refused requests change nothing: letting go of the session
            # (unset="keep") means it is neither saved nor touched and no cookie is sent.
            environ["session"] = None
        if method == "HEAD":
            headers.append(("Content-Length", str(len(body))))  # the length GET would send
            body = b""
        start_response(status, headers)
        return [body]

    def home(self, environ):
        """GET /: count views in the session and show what the session is made of."""
        sess = environ["session"]
        is_new = "created" not in sess  # every session this app has saved has it
        sess.setdefault("created", time.time())
        sess["views"] = sess.get("views", 0) + 1
        if is_new:
            what = ("Your browser sent no valid session cookie (a first visit, a logout, or a "
                    "cookie that expired or was tampered with), so the middleware started a new "
                    "session with a fresh random ID. The counter put something in it, so the record "
                    "was saved in the store and the signed cookie was sent with this page.")
        else:
            what = ("Your browser sent the cookie; the middleware checked its signature and loaded "
                    "the record with that ID from the store. The counter changed, so the record was "
                    "written back and the cookie re-sent with a fresh expiry.")
        facts = [
            ("Session ID", f"<code>{esc(sess.id[:8])}…</code> "
                           "(only a prefix: the whole ID is as good as a password)"),
            ("Cookie", "new, sent with this page" if is_new else "sent by your browser"),
            ("Expires", esc(format_expiry(sess.cookie.expires))),
            ("Store", esc(self.store_label)),
            ("Logged in as", esc(sess["user"]) if "user" in sess else "nobody"),
        ]
        options = "".join(f"<dt><code>{esc(option)}</code></dt><dd>{esc(why)}</dd>"
                          for option, why in OPTIONS_EXPLAINED)
        main = f"""
<p class="counter">You have seen this page <strong id="views">{esc(sess["views"])}</strong>
{"time" if sess["views"] == 1 else "times"} in this session.</p>
<p>Reload to count up. Open a private window to get a second, separate session.</p>
<table>{"".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)}</table>
<h2>How the middleware is configured</h2>
<dl>{options}</dl>"""
        return html_page("Home", sess, main, what)

    def login_form(self, environ, error: str = "", status: str = "200 OK"):
        """GET /login: the form; nothing is stored by showing it."""
        sess = environ["session"]
        who = f"<p>You are logged in as <strong>{esc(sess['user'])}</strong>.</p>" if "user" in sess else ""
        problem = f'<p class="error">{esc(error)}</p>' if error else ""
        main = f"""{who}{problem}
<form method="post" action="/login">
  <label for="user">Your name (anything, no password)</label>
  <input id="user" name="user" maxlength="{MAX_NAME_CHARS}" required autofocus>
  <button type="submit">Log in</button>
</form>"""
        what = ("Showing this form changes nothing: with save_uninitialized=False no cookie is "
                "sent and no record written yet. Logging in calls session.regenerate(): the old "
                "record is deleted and a new random ID replaces the old one, so anyone who knew or "
                "planted your old ID (session fixation) gets nothing. Then the app stores your name "
                "and copies the view counter over (as a shop would copy the cart); the new record is "
                "saved and its cookie sent.")
        return html_page("Log in", sess, main, what, status)

    def login(self, environ):
        """POST /login: new session ID first (fixation defence), then the user."""
        sess = environ["session"]
        name = read_form(environ).get("user", "").strip()
        if not name:
            return self.login_form(environ, "Please enter a name.", "400 Bad Request")
        if len(name) > MAX_NAME_CHARS or not name.isprintable():
            error = f"A name is 1 to {MAX_NAME_CHARS} printable characters."
            return self.login_form(environ, error, "400 Bad Request")
        views, old_id = sess.get("views", 0), sess.id
        sess.regenerate()  # a new ID and an empty session; the old record is deleted
        sess.update(user=name, views=views, created=time.time(), logged_in=time.time(),
                    id_before_login=old_id[:8], id_at_login=sess.id[:8])
        return redirect("/members")

    def members(self, environ):
        """GET /members: only for a logged-in session; reading it writes nothing back."""
        sess = environ["session"]
        if "user" not in sess:
            return redirect("/login")
        main = f"""
<p class="counter">Welcome, <strong id="user">{esc(sess["user"])}</strong>!</p>
<table>
<tr><th>Logged in</th><td>{esc(format_time(sess.get("logged_in", 0)))}</td></tr>
<tr><th>Session ID</th><td>replaced by regenerate() at login:
<code id="id-before">{esc(sess.get("id_before_login", "?"))}…</code>
→ <code id="id-after">{esc(sess.get("id_at_login", "?"))}…</code></td></tr>
</table>
<form method="post" action="/logout"><button type="submit">Log out</button></form>"""
        what = ("Your browser sent the cookie, the middleware verified its signature and found your "
                "name in the record. This page only reads the session, so nothing is written back "
                "(the store just refreshes the record's expiry) and no cookie is sent. Logging out "
                "calls session.destroy(): the record is deleted from the store and the response "
                "tells the browser to drop the cookie.")
        return html_page("Members", sess, main, what)

    def logout(self, environ):
        """POST /logout: delete the record; the middleware expires the cookie."""
        environ["session"].destroy()
        return redirect("/")


def check_host(environ, hosts: frozenset[str]) -> None:
    """ClientError unless the request names this server in its Host header.

    A page on another site whose name was made to resolve to this machine (DNS
    rebinding) reaches the server with that site's name in Host: refused before anything else.
    """
    host = environ.get("HTTP_HOST")
    if host is None:
        raise ClientError("400 Bad Request", "The request has no Host header.")
    if host.lower() not in hosts:
        raise ClientError("421 Misdirected Request",
                          "This server does not answer to that name: use the address it printed at startup.")


def check_same_origin(environ) -> None:
    """ClientError unless a POST comes from this site's own pages: against login CSRF,
    which SameSite=Lax alone allows.

    Browsers send Origin with every POST; one that leaves it out sends Referer (our
    Referrer-Policy keeps it for same-origin requests). A request with neither did not
    come from our pages and is refused too: with curl, add -H "Origin: http://HOST:PORT".
    """
    own = f"{environ['wsgi.url_scheme']}://{environ['HTTP_HOST'].lower()}"  # Host was checked
    origin, referer = environ.get("HTTP_ORIGIN"), environ.get("HTTP_REFERER")
    if origin is not None:
        ok = origin.lower() == own
    else:
        ok = referer is not None and referer.lower().startswith(own + "/")
    if not ok:
        raise ClientError("403 Forbidden", "Forms are only accepted from this site's own pages.")


def read_form(environ) -> dict[str, str]:
    """The url-encoded form in the request body; ClientError if it is missing, too big, cut short or malformed."""
    content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ClientError("400 Bad Request", "Expected a form (application/x-www-form-urlencoded).")
    if "HTTP_TRANSFER_ENCODING" in environ:  # the server does not decode chunked bodies
        raise ClientError("400 Bad Request", "Send the form with a Content-Length, not chunked.")
    text = environ.get("CONTENT_LENGTH", "")
    if not (text.isascii() and text.isdigit()):  # missing, or "-5"; int() would take "+5" or "5_0"
        raise ClientError("400 Bad Request", "The request has no valid Content-Length.")
    if len(text) > 9 or int(text) > MAX_FORM_BYTES:  # (int() is never given a huge number)
        raise ClientError("400 Bad Request", f"A form here is at most {MAX_FORM_BYTES} bytes.")
    length = int(text)
    try:
        body = environ["wsgi.input"].read(length)
    except OSError:  # the server's read timeout: the client stopped sending
        body = b""
    if len(body) != length:
        raise ClientError("400 Bad Request", "The form was shorter than its Content-Length said.")
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), strict_parsing=True,
                                       errors="strict", max_num_fields=10)
    except ValueError:  # includes UnicodeDecodeError
        raise ClientError("400 Bad Request", "The form could not be read.") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise ClientError("400 Bad Request", "A field was sent twice.")
    return form


# --- HTML -------------------------------------------------------------------------------

CSS = """
body { font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #222; background: #f6f6f3; }
header { display: flex; flex-wrap: wrap; gap: .3rem 1.2rem; align-items: center; min-height: 3rem;
         padding: .4rem 1.5rem; background: #234; color: #fff; white-space: nowrap; }
header a { color: #fff; }
header .who { margin-left: auto; }
header form { margin: 0; }
.page { display: grid; grid-template-columns: minmax(0, 1fr) 19rem; gap: 2rem;
        max-width: 62rem; padding: 1rem 1.5rem; }
@media (max-width: 44rem) { .page { grid-template-columns: 1fr; } }
aside { align-self: start; padding: .2rem 1rem; font-size: .93rem;
        background: #fffbe6; border-left: 4px solid #e0b000; }
.counter { font-size: 1.4rem; }
.error { color: #a00; font-weight: bold; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { text-align: left; vertical-align: top; padding: .3rem .8rem .3rem 0; }
th { color: #555; font-weight: normal; white-space: nowrap; }
dt { margin-top: .5rem; }
dd { margin-left: 1rem; color: #444; }
label { display: block; margin-bottom: .3rem; }
input { font: inherit; padding: .3rem; width: 16rem; }
button { font: inherit; padding: .2rem .9rem; cursor: pointer; }
"""

# Only this exact stylesheet may style the pages; no script may run at all.
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
SECURITY_HEADERS = [
    ("Content-Security-Policy", f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; "
                                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),  # pages show one visitor's session: no cache may keep them
]


def html_page(title: str, sess, main: str, what: str, status: str = "200 OK"):
    """A whole page: navigation, the content (already HTML), and beside it what happened and why."""
    if sess is not None and "user" in sess:
        account = (f'<span class="who">{esc(sess["user"])}</span><form method="post" '
                   'action="/logout"><button type="submit">Log out</button></form>')
    else:
        account = '<a class="who" href="/login">Log in</a>'
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · session demo</title><style>{CSS}</style></head>
<body><header><strong>session demo</strong>
<a href="/">Home</a><a href="/members">Members</a>{account}</header>
<div class="page"><main><h1>{esc(title)}</h1>{main}</main>
<aside><h2>What happened</h2><p>{esc(what)}</p></aside></div></body></html>
"""
    headers = [("Content-Type", "text/html; charset=utf-8")] + SECURITY_HEADERS
    return status, headers, page.encode()


def error_page(status: str, message: str, environ):
    """A page for a refused request, without a traceback or any unescaped input."""
    what = ("The app refused the request without changing the session: "
            "no cookie was sent and nothing was stored.")
    title = status.split(" ", 1)[1]
    return html_page(title, environ.get("session"), f"<p>{esc(message)}</p>", what, status)


def redirect(location: str):
    """303 See Other: after a POST the browser follows with a GET, so a reload does not resubmit."""
    return "303 See Other", [("Location", location)] + SECURITY_HEADERS, b""


def esc(text) -> str:
    """Text made safe for HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def format_time(epoch: float) -> str:
    """Seconds since the epoch as a UTC date and time."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def format_expiry(expires) -> str:
    """The cookie's expiry (an aware datetime, or None for a browser-session cookie) in words."""
    if expires is None:
        return "when the browser closes"
    return f"{expires:%Y-%m-%d %H:%M:%S} UTC (max_age after the cookie was last sent)"


# --- Store and secret from the command line ---------------------------------------------

DEFAULT_STORE = "sqlite:http_demo.sqlite3"
DRIVERS = {"redis": "redis", "rediss": "redis", "mongodb": "pymongo", "mongodb+srv": "pymongo",
           "postgresql": "psycopg", "postgres": "psycopg"}
PIP_NAMES = {"psycopg": '"psycopg[binary]"'}  # what to pip install, where it is not the import name


class UsageError(Exception):
    """A command-line problem, reported in one line with exit status 2."""


def open_store(spec: str) -> tuple[session.Store, str, str | None]:
    """The store named by --store, a label for the pages, and the file to keep a generated secret in."""
    kind, _, rest = spec.partition(":")
    if spec == "memory":
        return session.MemoryStore(), "MemoryStore (in this process: a restart forgets everyone)", None
    if spec == "sqlite::memory:":  # SQLite's own in-memory database: no file, no secret file
        import stores
        return stores.SQLiteStore(":memory:"), "SQLiteStore, in memory (a restart forgets everyone)", None
    if kind in ("sqlite", "shelve") and rest:
        import stores
        path = os.path.abspath(rest)
        store = stores.SQLiteStore(path) if kind == "sqlite" else stores.ShelveStore(path)
        return store, f"{type(store).__name__}, file {path}", path + ".secret"
    if kind in DRIVERS:
        package = DRIVERS[kind]
        if importlib.util.find_spec(package) is None:
            raise UsageError(f"--store {kind}://… needs the Python package {package!r}: "
                             f"pip install {PIP_NAMES.get(package, package)}")
        import stores
        if package == "psycopg":
            store = stores.PostgresStore(conninfo=spec, create_table_if_missing=True)
        else:
            store = stores.RedisStore(url=spec) if package == "redis" else stores.MongoStore(url=spec)
        return store, f"{type(store).__name__}, {redact(spec)}", os.path.abspath("http_demo.secret")
    raise UsageError(f"unknown --store {spec!r}: "
                     "use memory, sqlite:PATH, shelve:PATH, redis://…, mongodb://… or postgresql://…")


def redact(url: str) -> str:
    """The URL without its password, fit to print."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def load_secret(given: str | None, secret_file: str | None) -> tuple[str, str]:
    """The signing secret and a sentence saying where it came from.

    Without --secret or SESSION_SECRET, a secret is generated once and kept in a
    file only its owner can read, so a restart does not log everybody out.
    """
    if given:
        return given, "from --secret"
    if os.environ.get("SESSION_SECRET"):
        return os.environ["SESSION_SECRET"], "from SESSION_SECRET"
    if secret_file is None:
        return secrets.token_urlsafe(32), "generated for this run only (so are the sessions)"
    try:
        with open(secret_file, encoding="utf-8") as f:
            secret = f.read().strip()
    except FileNotFoundError:
        secret = secrets.token_urlsafe(32)
        # O_EXCL: never write into a file (or through a symlink) that someone else put there.
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
        return secret, (f"generated and saved in {secret_file} (mode 0600), "
                        "so a restart keeps everyone logged in")
    if not secret:
        raise UsageError(f"the secret file {secret_file} is empty: delete it to get a new one")
    return secret, f"read from {secret_file}"


# --- Server -----------------------------------------------------------------------------

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
BODY_SECONDS = 2     # the longest pause within a request body
LINGER_SECONDS = 2   # the longest a refused body is read and dropped after the answer


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server with a thread per connection."""

    # Browsers open spare connections and leave them idle: waiting for their threads
    # would hold up Ctrl-C, so they are daemons, as in http.server's ThreadingHTTPServer.
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A browser dropping an idle or half-sent connection is not worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            super().handle_error(request, client_address)

    def shutdown_request(self, request):
        # Lingering close: a client still sending a body the app refused unread (a huge
        # form) would get a reset and lose the answer; drop what it sends for a moment first.
        try:
            request.shutdown(socket.SHUT_WR)
            request.settimeout(LINGER_SECONDS)
            deadline = time.monotonic() + LINGER_SECONDS
            while request.recv(65536) and time.monotonic() < deadline:
                pass
        except OSError:
            pass
        self.close_request(request)


class RequestHandler(WSGIRequestHandler):
    timeout = 10  # seconds: a connection that sends no request does not keep its thread for long

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers
        # The body must follow promptly, or the app reads it cut short and answers 400
        # (rather than a 500 after `timeout` seconds).
        self.connection.settimeout(BODY_SECONDS)
        return parsed


def known_hosts(given: str, address: tuple) -> set[str]:
    """The Host header values the server answers to: the names its address is reached by, with the port.

    That is the --host given and the address bound; on loopback also 127.0.0.1,
    localhost and [::1]; on every interface (0.0.0.0) also this machine's name and addresses.
    """
    ip, port = address[:2]
    names = {name for name in (given.lower(), ip) if name}
    bound = ipaddress.ip_address(ip)
    if bound.is_loopback:
        names.update(LOOPBACK_NAMES)
    if bound.is_unspecified:
        hostname = socket.gethostname().lower()
        names.update(LOOPBACK_NAMES, [hostname])
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(hostname, None, socket.AF_INET))
        except OSError:  # a machine name that does not resolve: reached by address only
            pass
        names.update(_outbound_addresses())
    names = {f"[{name}]" if ":" in name and not name.startswith("[") else name for name in names}
    hosts = {f"{name}:{port}" for name in names}
    return hosts | names if port == 80 else hosts  # browsers leave out the default port


def _outbound_addresses() -> set[str]:
    """The addresses this machine's default routes leave from (its LAN address, which its
    name often does not resolve to): connecting a UDP socket picks one and sends nothing."""
    found = set()
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe_socket:
                probe_socket.connect((probe, 9))
                found.add(probe_socket.getsockname()[0])
        except OSError:  # no route of that family
            pass
    return found


def port_number(text: str) -> int:
    """argparse type for --port."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def stop(signum, frame):
    """SIGTERM (kill, systemd, docker stop) ends the server loop the way Ctrl-C does."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sessions demo on wsgiref.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8000,
                        help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--store", default=DEFAULT_STORE,
                        help="memory, sqlite:PATH, shelve:PATH, redis://…, mongodb://… or postgresql://… "
                             f"(default {DEFAULT_STORE})")
    parser.add_argument("--secret", help="cookie signing secret (better: SESSION_SECRET, "
                                         "since arguments show in ps)")
    args = parser.parse_args(argv)

    store = None
    try:
        store, store_label, secret_file = open_store(args.store)
        secret, secret_source = load_secret(args.secret, secret_file)
        count = store.length()  # reach the store now rather than at the first request
        server = ThreadingWSGIServer((args.host, args.port), RequestHandler)
    except Exception as exc:  # a bad option, a store that is down, a port in use: one line
        if store is not None:
            store.close()
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    # From here on an exception in a request (a store that goes down) is wsgiref's to catch:
    # it answers a bare 500 and logs the traceback on stderr, never in the page.
    hosts = known_hosts(args.host, server.server_address)
    server.set_app(session.SessionMiddleware(DemoApp(store_label, hosts), secret=secret, store=store,
                                             **SESSION_OPTIONS))
    signal.signal(signal.SIGTERM, stop)

    print(f"Store:  {store_label} ({count} live session{'' if count == 1 else 's'})")
    print(f"Secret: {secret_source}")
    print(f"Hosts:  {', '.join(sorted(hosts))} (requests naming any other are refused)")
    print(f"Serving on http://{args.host}:{server.server_port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopping…", flush=True)
    finally:
        server.server_close()
        store.close()
    print("Stopped; store closed.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
