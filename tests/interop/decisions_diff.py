"""Differential test of express-session's per-request decisions against SessionMiddleware's.

Generates random scenarios (options x 2-4 requests x actions: see decisions_py.py), runs them
through the real express-session 1.19 on Express 4 or 5 (decisions_node.js, in one node process)
and through ours (decisions_py.py, in-process), and normalises each request's outcome: the
Set-Cookie sent or expired, its lifetime and attributes; the store's get / set / touch / destroy
and the record written; what the handler saw.  Session IDs become labels by order of appearance, data is
compared as JavaScript holds it (1.0 is 1, integer-like keys first), times are seconds from the
request's start and match within TOLERANCE.  Normalised away: the differences README documents
(destroy() and unset="destroy" expire the cookie here, and what follows from it), express's
no-op destroy of an ID never stored, and its second write of the record save() wrote.

test_decisions_vs_express.py runs a fixed set and fails on any difference.  By hand (node, and
`npm ci` in tests/interop):

    python tests/interop/decisions_diff.py --n 1000 --seed 1 [--known] [--show 2] [--dump diffs.json] [--express 5]
    python tests/interop/decisions_diff.py --replay scenario.json   # its outcomes on both sides

--known also generates the differences accepted on purpose, which the test leaves out (see
gen_scenario); each class of difference is shown with its smallest scenario, shrunk.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import email.utils
import json
import os
import random
import re
import subprocess
import sys
import time
import urllib.parse

if __package__:
    from . import decisions_py
else:  # run as a script
    import decisions_py

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 5.0  # seconds; lifetimes generated differ by a minute at least
NODE_TIMEOUT = 300  # seconds, for one node run

KEYS = [["a", "b", "1", "2"], ["a", "b", "c"]]  # a scenario's keys: with integer-like ones, or without
VALUES = [1, 2, "x", [1, 2], {"k": 1}, {"z": 1, "y": [2]}, None, True, 0, "", 1.5, 1e21, "\u00e9\u2028", -1,
          1.0, -0.0, 0.1, 1e-7, 123456789012]
VERBS = {"read": 10, "write": 16, "writeSame": 5, "append": 4, "delete": 5, "regenerate": 4, "destroy": 3,
         "null": 3, "touch": 3, "save": 5, "reload": 3, "maxAge": 4, "nothing": 3, "move": 4, "httpOnly": 2,
         "sameSite": 2, "expiresIn": 2, "clear": 2}
OPTIONS = {"resave": [False, True], "saveUninitialized": [False, True], "rolling": [False, True],
           "unset": ["keep", "destroy"], "maxAge": [None, 3600000, 600000], "httpOnly": [True, False],
           "sameSite": [None, "lax", "strict", True], "name": ["connect.sid", "sid"]}
COOKIES = ["jar", "old", "unknown", "none"]
_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")


# ---------------------------------------------------------------- scenarios

def is_index(key: str) -> bool:
    """An integer-like key, which a JavaScript object keeps first, in numeric order."""
    return bool(_INDEX.fullmatch(key)) and int(key) < 2 ** 32 - 1


def js_value(value):
    """A JSON value as JavaScript holds it: 1.0 is 1, -0.0 is 0 (session.py writes 2.0 as
    2.0 on purpose, see _float_json: the same number for JSON.parse), and an object's
    integer-like keys come first, in numeric order."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    if isinstance(value, list):
        return [js_value(v) for v in value]
    if isinstance(value, dict):
        keys = sorted((k for k in value if is_index(k)), key=int) + [k for k in value if not is_index(k)]
        return {k: js_value(value[k]) for k in keys}
    return value


def js_json(value) -> str:
    return json.dumps(js_value(value), ensure_ascii=False)


def gen_action(rng, keys):
    verb = rng.choices(list(VERBS), list(VERBS.values()))[0]
    if verb == "httpOnly":
        return [verb, rng.choice([True, False])]
    if verb == "sameSite":
        return [verb, rng.choice(["lax", "strict"])]
    if verb == "expiresIn":
        return [verb, rng.choice([7200000, 60000])]
    if verb in ("read", "writeSame", "append", "delete", "move"):
        return [verb, rng.choice(keys)]
    if verb == "write":
        return [verb, rng.choice(keys), rng.choice(VALUES)]
    if verb == "maxAge":
        return [verb, rng.choice([None, 60000, 7200000, 3600000, 0])]
    return [verb]


def _agrees(action, earlier, indexed, written) -> bool:
    """Whether ``action``, after ``earlier`` in its request, stays out of the accepted differences
    (see gen_scenario).  ``indexed``: the scenario has integer-like keys; ``written`` maps each key
    to {its values' JSON as JavaScript writes it: as Python does}, for the values written to it
    so far in the scenario, and is kept up to date."""
    verb, verbs = action[0], [a[0] for a in earlier]
    if verb in ("maxAge", "expiresIn"):
        return "save" not in verbs
    if verb == "save":
        return ["maxAge", 0] not in earlier
    if verb in ("httpOnly", "sameSite") and "regenerate" in verbs:
        return "save" not in verbs[verbs.index("regenerate"):]
    if indexed and verb == "move":
        return False
    if indexed and verb in ("write", "append") and ("clear" in verbs or ["delete", action[1]] in earlier):
        return False
    if verb == "write":
        texts = written.setdefault(action[1], {})
        return texts.setdefault(js_json(action[2]), json.dumps(action[2])) == json.dumps(action[2])
    return True


def gen_scenario(rng, *, known: bool = False) -> dict:
    """A random scenario.  Unless ``known``, it holds none of the differences from express that
    are accepted, so that any difference is a regression:
      - a key given a number it held as the other Python type (1 and 1.0, 0 and -0.0): a float
        is stored as Python writes it, so here that is a change (README);
      - a key taken out and put back (move; delete or clear, then write or append, in one
        request) where there are integer-like keys: JavaScript keeps those first, in order, so
        where that leaves the keys' order as it was, to express nothing changed;
      - the cookie's lifetime changed after save() in the same request: here it reaches the
        store with a touch (README);
      - save() after maxAge = 0 in the same request: the record saved has expired already,
        so a later change's write finds it gone here, and a session gone from the store gets
        no cookie (README), where express writes it again and sends the cookie, expired;
      - the cookie's httpOnly or sameSite changed after regenerate() and save(): express
        writes the record again, with them, because its isSaved compares the ID the request
        began with, not the new one; here the record keeps the attributes save() wrote (the
        response's cookie has the new ones either way)."""
    keys = rng.choice(KEYS)
    indexed = any(is_index(k) for k in keys)
    options = {name: rng.choice(values) for name, values in OPTIONS.items()}
    written = {}
    requests = []
    for i in range(rng.randint(2, 4)):
        mode = "none" if i == 0 else rng.choices(COOKIES, [80, 8, 6, 6])[0]
        count = rng.choice([0, 1, 1, 2, 2, 3])
        actions = []
        while len(actions) < count:
            action = gen_action(rng, keys)
            if known or _agrees(action, actions, indexed, written):
                actions.append(action)
        requests.append({"cookie": mode, "actions": actions})
    return {"options": options, "requests": requests}


def gen_scenarios(n: int, seed: int, *, known: bool = False) -> list:
    rng = random.Random(seed)
    return [gen_scenario(rng, known=known) for _ in range(n)]


# ---------------------------------------------------------------- running

def run_node(scenarios: list, express: str = "4") -> list:
    """The outcomes of express-session on Express ``express`` (its major), from one node process,
    which never outlives the call (subprocess.run kills it on a timeout or on any exception)."""
    proc = subprocess.run(["node", os.path.join(HERE, "decisions_node.js")], input=json.dumps(scenarios),
                          env=dict(os.environ, EXPRESS=express), capture_output=True, text=True,
                          timeout=NODE_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"node decisions_node.js exited with {proc.returncode}: {proc.stderr[-2000:]}")
    outcomes = json.loads(proc.stdout)
    ran = {outcome["express"] for outcome in outcomes}
    if {version.split(".")[0] for version in ran} - {express}:
        raise RuntimeError(f"decisions_node.js ran Express {', '.join(sorted(ran))}, not Express {express}")
    return outcomes


def run_both(scenarios: list, express: str = "4") -> list:
    """(express's, ours), normalised, for each scenario."""
    node = run_node(scenarios, express)
    ours = [dict(decisions_py.run_scenario(sc), side="ours") for sc in scenarios]
    return [(normalise(sc, n), normalise(sc, p)) for sc, n, p in zip(scenarios, node, ours)]


def differing(scenarios: list, express: str = "4") -> list:
    """(scenario, express's, ours) for each scenario whose outcomes differ."""
    return [(sc, a, b) for sc, (a, b) in zip(scenarios, run_both(scenarios, express)) if a != b]


def size(sc: dict) -> tuple:
    return len(sc["requests"]), sum(len(r["actions"]) for r in sc["requests"])


def smaller(sc: dict):
    """Each scenario one request, or one action, short of ``sc``."""
    reqs = sc["requests"]
    for i in range(len(reqs)):
        if len(reqs) > 1:
            yield dict(sc, requests=reqs[:i] + reqs[i + 1:])
    for i, r in enumerate(reqs):
        for j in range(len(r["actions"])):
            step = dict(r, actions=r["actions"][:j] + r["actions"][j + 1:])
            yield dict(sc, requests=reqs[:i] + [step] + reqs[i + 1:])


def shrink(sc: dict, a: dict, b: dict, express: str = "4") -> tuple:
    """(scenario, express's, ours): ``sc`` made as small as it goes while the outcomes still
    differ, a request or an action at a time (each round's candidates in one node run).
    Taking out never adds what gen_scenario leaves out."""
    while True:
        found = differing(list(smaller(sc)), express)
        if not found:
            return sc, a, b
        sc, a, b = found[0]


# ---------------------------------------------------------------- normalisation

class Seconds(float):
    """A time in seconds, equal to another within TOLERANCE: each side reads its own clock,
    and an Expires attribute is cut to the second."""

    __hash__ = None

    def __new__(cls, value: float):
        return super().__new__(cls, round(value, 1))

    def __eq__(self, other):
        return isinstance(other, Seconds) and abs(self - other) <= TOLERANCE

    def __ne__(self, other):
        return not self == other


class Labels(dict):
    def __call__(self, sid):
        if sid is None:
            return None
        if sid == "nosuchid":
            return "UNKNOWN"
        if sid not in self:
            self[sid] = f"S{len(self)}"
        return self[sid]


def sid_of(cookie_value):
    if not cookie_value:
        return None
    value = urllib.parse.unquote(cookie_value)
    return value[2:].rsplit(".", 1)[0] if value.startswith("s:") else value


def lifetime(ts_ms: float, at: float, done: float):
    """"past" for an instant the request's end had reached, else Seconds from its start."""
    return "past" if ts_ms <= done else Seconds((ts_ms - at) / 1000)


def norm_cookie(raw, name, labels, at, done):
    parts = raw.split("; ")
    cname, _, value = parts[0].partition("=")
    if cname != name:
        return None
    attrs = {}
    for part in parts[1:]:
        k, eq, v = part.partition("=")
        attrs[k.lower()] = v if eq else True
    exp = None
    if "expires" in attrs:
        exp = lifetime(email.utils.parsedate_to_datetime(attrs["expires"]).timestamp() * 1000, at, done)
    if "max-age" in attrs:
        exp = "past" if int(attrs["max-age"]) <= 0 else Seconds(int(attrs["max-age"]))
    return {"sid": labels(sid_of(value)) if exp != "past" else "-", "exp": exp,
            "attrs": sorted(k if k not in ("samesite", "path") else f"{k}={str(v).lower()}"
                            for k, v in attrs.items() if k not in ("expires", "max-age"))}


def norm_record(rec, at, done):
    if rec is None or rec == "REFUSED":  # MemoryStore keeps no expired record, nor merges into one
        return "GONE"
    cookie = rec.get("cookie", {})
    exp = cookie.get("expires")
    if exp is not None:
        when = datetime.datetime.strptime(exp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        exp = lifetime(when.timestamp() * 1000, at, done)
        if exp == "past":
            return "GONE"
    oma = cookie.get("originalMaxAge")
    return {"data": js_json({k: v for k, v in rec.items() if k != "cookie"}),
            "oma": None if oma is None else Seconds(oma / 1000), "exp": exp,
            "cookie": {k: v for k, v in sorted(cookie.items()) if k not in ("expires", "originalMaxAge")}}


def norm_body(body):
    if "seen" not in body:
        return body  # not the handler's: an error page
    oma = body["seenOMA"]
    return {"seen": None if body["seen"] is None else js_json(body["seen"]),
            "seenOMA": None if oma is None else Seconds(oma / 1000),
            "seenCookie": body["seenCookie"], "notes": js_value(body["notes"])}


def _without_rewrites(calls):
    """``calls`` without a write of the record that the ID's last write (reads aside) wrote: express
    writes again where save() wrote it after regenerate() (its isSaved compares the ID the
    request began with), a reload() between or not."""
    out = []
    for c in calls:
        last = next((p for p in reversed(out) if p[1] == c[1] and p[0] != "get"), None)
        if not (c[0] == "set" and last == c):
            out.append(c)
    return out


def normalise(sc, outcome):
    labels = Labels()
    name = sc["options"]["name"]
    # IDs that ever reached the store or the browser; destroying another (express destroys
    # the ID it generated for a new session, never stored nor sent) is a no-op, left out.
    known = set()
    for r in outcome["requests"]:
        known.add(sid_of(r["sentCookie"]))
        known.update(c[1] for c in r["calls"] if c[0] in ("set", "touch"))
        known.update(sid_of(raw.split(";")[0].partition("=")[2]) for raw in r["setCookie"])
    reqs = []
    for step, r in zip(sc["requests"], outcome["requests"]):
        r = dict(r)
        at, done = r["at"], r["done"]
        # A cookie naming no stored session is as no cookie (README: destroy() and unset="destroy"
        # expire the cookie here, so our browser sends none where express's sends a stale one).
        if (r["sentCookie"] and r["calls"] and r["calls"][0][0] == "get" and r["calls"][0][2] is None
                and r["calls"][0][1] == sid_of(r["sentCookie"])):
            r["calls"] = r["calls"][1:]
            r["sentCookie"] = None
        verbs = [a[0] for a in step["actions"]]
        documented_expiry = "destroy" in verbs or ("null" in verbs and sc["options"]["unset"] == "destroy")
        sent = labels(sid_of(r["sentCookie"]))
        calls = [[c[0], labels(c[1]), c[2] if c[0] in ("get", "destroy") else norm_record(c[2], at, done)]
                 for c in r["calls"] if c[0] != "destroy" or c[1] in known]
        # express destroys twice after destroy() with unset="destroy" (destroy() drops
        # req.session, and shouldDestroy then sees none): the second is a no-op, folded.
        calls = [c for k, c in enumerate(calls) if not (c[0] == "destroy" and k and calls[k - 1] == c)]
        calls = _without_rewrites(calls)
        cookies = [c for c in (norm_cookie(raw, name, labels, at, done) for raw in r["setCookie"]) if c]
        if documented_expiry and outcome.get("side") == "ours" and [c["exp"] for c in cookies] == ["past"]:
            cookies = []  # README: destroy() (and unset="destroy") expire the cookie; express sends none
        reqs.append({"status": r["status"], "sent": sent, "cookies": cookies, "calls": calls,
                     "body": norm_body(r["body"])})
    final_at = outcome["finalAt"]
    final = {labels(sid): norm_record(rec, final_at, final_at) for sid, rec in outcome["final"].items()}
    final = {k: v for k, v in final.items() if v != "GONE"}
    return {"requests": reqs, "final": dict(sorted(final.items()))}


# ---------------------------------------------------------------- comparison

def diff_keys(a, b):
    """Where two normalised outcomes differ: r<i>.<field> (calls: .kinds or .detail; cookie:
    .sent or .detail) and final."""
    keys = []
    for i, (ra, rb) in enumerate(zip(a["requests"], b["requests"])):
        for field in ("status", "sent", "cookies", "calls", "body"):
            if ra[field] != rb[field]:
                if field == "calls":
                    kinds_a = [c[0] for c in ra["calls"]]
                    kinds_b = [c[0] for c in rb["calls"]]
                    keys.append(f"r{i}.calls" + (".kinds" if kinds_a != kinds_b else ".detail"))
                elif field == "cookies":
                    sent = bool(ra["cookies"]) != bool(rb["cookies"])
                    keys.append(f"r{i}.cookie." + ("sent" if sent else "detail"))
                else:
                    keys.append(f"r{i}.{field}")
    if a["final"] != b["final"]:
        keys.append("final")
    return keys


def first_request_differing(a, b):
    for i, (ra, rb) in enumerate(zip(a["requests"], b["requests"])):
        if ra != rb:
            return i, ra, rb
    return None, None, None


def classify(a, b):
    """A signature for grouping: the first differing request's differing fields (values summarised)."""
    i, ra, rb = first_request_differing(a, b)
    if i is None:
        return "final-only"
    parts = []
    if ra["cookies"] != rb["cookies"]:
        def c(cs):
            return ",".join("expired" if x["exp"] == "past" else "session" if x["exp"] is None
                            else f"{x['exp']:.0f}s" for x in cs) or "none"
        parts.append(f"cookie express={c(ra['cookies'])} ours={c(rb['cookies'])}")
    if ra["calls"] != rb["calls"]:
        ka = [x[0] for x in ra["calls"] if x[0] != "get"]
        kb = [x[0] for x in rb["calls"] if x[0] != "get"]
        parts.append(f"calls express={ka} ours={kb}" if ka != kb else "call-detail")
    if ra["body"] != rb["body"]:
        parts.append("body")
    if ra["status"] != rb["status"]:
        parts.append(f"status {ra['status']}/{rb['status']}")
    if ra["sent"] != rb["sent"]:
        parts.append("sent-cookie")
    return " | ".join(parts)


def describe(sc, a, b) -> str:
    """The scenario and, request by request, express's outcome and ours (once where they agree)."""
    lines = [f"  scenario (for --replay): {json.dumps(sc)}", f"  options: {json.dumps(sc['options'])}"]
    for i, r in enumerate(sc["requests"]):
        lines.append(f"  r{i} cookie={r['cookie']:7} actions={json.dumps(r['actions'])}")
    if a != b:
        lines.append(f"  differs at: {', '.join(diff_keys(a, b))}")
    for i, (ra, rb) in enumerate(zip(a["requests"], b["requests"])):
        if ra == rb:
            lines.append(f"  r{i} both:    {json.dumps(ra)}")
        else:
            lines += [f"  r{i} express: {json.dumps(ra)}", f"  r{i} ours:    {json.dumps(rb)}"]
    if a["final"] == b["final"]:
        lines.append(f"  final both:    {json.dumps(a['final'])}")
    else:
        lines += [f"  final express: {json.dumps(a['final'])}", f"  final ours:    {json.dumps(b['final'])}"]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--known", action="store_true", help="also generate the accepted differences")
    ap.add_argument("--show", type=int, default=1, help="examples shown per class, shrunk")
    ap.add_argument("--dump", help="write every differing scenario with both outcomes here")
    ap.add_argument("--replay", help="a JSON file with one scenario (or a list): print both outcomes")
    ap.add_argument("--express", choices=["4", "5"], default="4", help="the Express major to run on")
    args = ap.parse_args()
    if args.replay:
        with open(args.replay) as f:
            scs = json.load(f)
        scs = scs if isinstance(scs, list) else [scs]
        for sc, (a, b) in zip(scs, run_both(scs, args.express)):
            print(("same" if a == b else "DIFFERENT") + "\n" + describe(sc, a, b))
        return
    scs = gen_scenarios(args.n, args.seed, known=args.known)
    t0 = time.time()
    found = differing(scs, args.express)
    requests = sum(len(s["requests"]) for s in scs)
    print(f"{len(scs)} scenarios, {requests} requests in {time.time() - t0:.1f}s; {len(found)} differ",
          file=sys.stderr)
    classes = collections.defaultdict(list)
    for sc, a, b in found:
        classes[classify(a, b)].append((sc, a, b))
    for key, items in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        print(f"\n=== {len(items)} x {key}")
        for sc, a, b in sorted(items, key=lambda t: size(t[0]))[:args.show]:
            print(describe(*shrink(sc, a, b, args.express)))
    if args.dump:
        with open(args.dump, "w") as f:
            json.dump([{"scenario": sc, "express": a, "ours": b, "keys": diff_keys(a, b)}
                       for sc, a, b in found], f, indent=1)


if __name__ == "__main__":
    main()
