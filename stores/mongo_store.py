"""MongoStore: sessions in MongoDB, readable and writable by Express's connect-mongo 5/6.

One document per session in the "sessions" collection::

    {_id: sid, session: '<record JSON>', expires: ISODate(...), lastModified: ISODate(...)}

``session`` is the record's JSON string (``stringify=True``, connect-mongo's
default) or the record as a sub-document; ``lastModified`` is written only with
``touch_after``.  A TTL index on ``expires`` lets MongoDB delete expired
documents.  Needs pymongo (``pip install pymongo``)::

    from stores.mongo_store import MongoStore
    store = MongoStore(url="mongodb://127.0.0.1:27017/myapp")

Concurrent requests on one session (``merge``), without a lock, each write one
command on one document (atomic in MongoDB):

- ``stringify=True``: a compare-and-set on the stored string,
  ``update_one({_id, session: <the text the request loaded>, live})``; when it
  matches nothing, the document is read again, the request's changes applied to
  what is stored, and the compare-and-set repeated (each miss means another
  write landed, so writers always make progress).  The common case, nobody wrote
  since the request loaded, is the one update a ``set`` is.
- ``stringify=False``: no compare at all: one ``update_one`` on the live
  document ``$set``s and ``$unset``s the ``session.<key>`` fields this request
  changed, with its cookie's times (over a stored cookie that expires no later)
  and the later ``expires``; MongoDB merges them into whatever other requests
  wrote.  The rest take the compare-and-set, the document read first and told
  from the loaded record by its JSON: keys MongoDB cannot address as a path
  (with ``.`` or a leading ``$``), a request that changed cookie attributes,
  moved a key or added several (MongoDB 5.0+ adds new fields sorted), a stored
  cookie that expires later (kept), and documents whose ``session`` is a string.
- A new session is ``insert_one``: a ``DuplicateKeyError`` means the ID is
  taken, and only a document that is not live (see ``_live``: expired) is then
  replaced.  A merge never brings back a document that
  is gone or expired.
"""
from __future__ import annotations

import base64
import logging
import re
import threading
import weakref
from datetime import datetime, timezone
from typing import Any, Optional

import session

__all__ = ["MongoStore"]

log = logging.getLogger(__name__)

AUTO_REMOVE = ("native", "interval", "disabled")
_INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict


class MongoStore(session.Store):
    """A connect-mongo compatible store: ``{_id, session, expires}`` documents.

    ``client`` is a ``pymongo.MongoClient``, never closed by the store; with
    ``url`` the store makes (and ``close()`` closes) its own.  ``db_name``
    defaults to the database named in the URL, else the driver's "test".
    ``ttl`` (seconds, default 14 days) applies to records without
    ``cookie.expires``.  ``touch_after`` (seconds): a touch within that time of
    the last write or touch is skipped, saving a write per request.
    ``auto_remove``: "native" (a TTL index; MongoDB deletes expired documents
    about once a minute), "interval" (this process deletes them every
    ``auto_remove_interval`` seconds) or "disabled".  Expired documents are
    never returned in any mode.
    """

    #: seconds between deletes of expired documents with auto_remove="interval"
    #: (connect-mongo's autoRemoveInterval default, 10 minutes)
    auto_remove_interval: float = 600

    def __init__(self, client: Any = None, *, url: Optional[str] = None,
                 db_name: Optional[str] = None, collection: str = "sessions",
                 ttl: float = 1209600, touch_after: float = 0, stringify: bool = True,
                 auto_remove: str = "native") -> None:
        pymongo = _import_pymongo()
        if client is not None and url is not None:
            raise ValueError("MongoStore takes a client or a url, not both")
        if client is not None and not callable(getattr(client, "get_default_database", None)):
            raise TypeError(f"client must be a pymongo MongoClient, not a "
                            f"{type(client).__name__}; a URL goes in url=")
        if db_name is not None and (not isinstance(db_name, str) or not db_name):
            raise ValueError(f"db_name must be a non-empty str or None, not {db_name!r}")
        if not isinstance(collection, str) or not collection or "$" in collection:
            raise ValueError(f"collection must be a non-empty str without '$', not {collection!r}")
        if not _is_number(ttl) or not 0 < ttl <= session._MAX_AGE:
            raise ValueError(f"ttl must be a number of seconds above 0, at most "
                             f"{session._MAX_AGE}, not {ttl!r:.40}")
        if not _is_number(touch_after) or touch_after < 0:
            raise ValueError(f"touch_after must be a number of seconds >= 0, not {touch_after!r}")
        if not isinstance(stringify, bool):
            raise TypeError(f"stringify must be True or False, not {stringify!r}")
        if auto_remove not in AUTO_REMOVE:
            raise ValueError(f"auto_remove must be one of {', '.join(AUTO_REMOVE)}, "
                             f"not {auto_remove!r}")
        self._owns_client = client is None
        if client is None:
            client = pymongo.MongoClient(url) if url is not None else pymongo.MongoClient()
        self.client = client
        database = client[db_name] if db_name else client.get_default_database("test")
        self.collection = database[collection]
        self.ttl = ttl
        self.touch_after = touch_after
        self.stringify = stringify
        self.auto_remove = auto_remove
        self._operation_failure = pymongo.errors.OperationFailure
        self._driver_error = pymongo.errors.PyMongoError
        self._duplicate_key = pymongo.errors.DuplicateKeyError
        self._index_lock = threading.Lock()
        self._index_ready = auto_remove != "native"
        self._stop = threading.Event()
        self._remover: Optional[threading.Thread] = None
        if auto_remove == "interval":
            self._remover = threading.Thread(target=_remove_expired, name="MongoStore-auto-remove",
                                             args=(weakref.ref(self), self._stop), daemon=True)
            self._remover.start()

    # -- one session -------------------------------------------------------
    def get(self, sid: str) -> Optional[dict[str, Any]]:
        """The record, unless missing or past its ``expires`` (MongoDB's TTL monitor runs
        only once a minute, so the filter, as connect-mongo's, is what hides expired ones)."""
        doc = self._coll().find_one({"_id": sid, **_live(_now())}, {"session": 1})
        return None if doc is None else self._decode(sid, doc.get("session"))

    def set(self, sid: str, record: dict[str, Any]) -> None:
        """Upsert ``{_id, session, expires[, lastModified]}``; an already expired record is deleted."""
        now = _now()
        expires = self._expires(record, now)
        if expires <= now:
            self._coll().delete_one({"_id": sid})
            return
        text = session.encode_record(record)
        fields = {"session": text if self.stringify else _to_bson(_bson_record(text)),
                  "expires": expires}
        if self.touch_after > 0:
            fields["lastModified"] = now
        collection = self._coll()
        try:
            collection.update_one({"_id": sid}, {"$set": fields}, upsert=True)
        except self._duplicate_key:
            # Two first writes of one new session raced and both tried to insert; the
            # document exists now, so the same update replaces it (MongoDB's advice).
            collection.update_one({"_id": sid}, {"$set": fields}, upsert=True)
        except OverflowError as exc:
            raise ValueError(f"session {sid[:6]}... has an integer BSON cannot hold (64-bit); "
                             "MongoStore(stringify=True) stores any JSON") from exc

    def touch(self, sid: str, record: dict[str, Any]) -> None:
        """Move ``expires``, never earlier unless ``record.keep_later`` is False; skipped within
        ``touch_after`` of the last write, unless the request changed the cookie's lifetime
        (keep_later False: the record must not outlive or die before the cookie sent).  A
        document that is gone (or expired) is left alone: never an error, never revived."""
        now = _now()
        expires = self._expires(record, now)
        query = {"_id": sid, **_live(now)}
        fields = {"expires": expires}
        keep_later = getattr(record, "keep_later", True)
        if self.touch_after > 0 and keep_later:
            # Lazy touch decided by the server, so get() need not hand lastModified to the app.
            cutoff = datetime.fromtimestamp(now.timestamp() - self.touch_after, timezone.utc)
            query = {"_id": sid, "$and": [_live(now), {"$or": [
                {"lastModified": {"$exists": False}}, {"lastModified": {"$lte": cutoff}}]}]}
            fields["lastModified"] = now
        if keep_later:
            query["expires"] = {"$lt": expires}  # another request's later expiry stays
        self._coll().update_one(query, {"$set": fields})

    # -- records as text, concurrent-safe writes ------------------------------
    def get_text(self, sid: str) -> Optional[str]:
        """The live record's JSON: the stored string as it is (stringify=True), or the
        sub-document encoded; None, logged, for a value that is neither."""
        doc = self._coll().find_one({"_id": sid, **_live(_now())}, {"session": 1})
        return None if doc is None else self._text(sid, doc.get("session"))

    def merge(self, sid: str, change: session.Change) -> bool:
        """Write one request's change into the document as stored now (see the module
        docstring); False, with nothing written, for a new session whose ID is live or a
        loaded one that is gone."""
        try:
            if change.base is None:
                return self._create(sid, change)
            if self.stringify:
                return self._compare_and_set(sid, change)
            return self._set_fields(sid, change)
        except OverflowError as exc:
            raise ValueError(f"session {sid[:6]}... has an integer BSON cannot hold (64-bit); "
                             "MongoStore(stringify=True) stores any JSON") from exc

    def destroy(self, sid: str) -> None:
        self._coll().delete_one({"_id": sid})

    # -- the whole store ---------------------------------------------------
    def all(self) -> dict[str, dict[str, Any]]:
        records = {}
        for doc in self._coll().find(_live(_now()), {"session": 1}):
            record = self._decode(doc["_id"], doc.get("session"))
            if record is not None:
                records[doc["_id"]] = record
        return records

    def ids(self) -> list[str]:
        return [doc["_id"] for doc in self._coll().find(_live(_now()), {"_id": 1})]

    def length(self) -> int:
        """Live documents only (connect-mongo counts expired ones not yet removed too)."""
        count: int = self._coll().count_documents(_live(_now()))
        return count

    def clear(self) -> None:
        # delete_many, not connect-mongo's drop(): dropping would also drop the TTL index.
        self._coll().delete_many({})

    def prune(self) -> int:
        count: int = self._coll().delete_many({"expires": {"$lte": _now()}}).deleted_count
        return count

    def close(self) -> None:
        """Stop the interval remover; close the client only if this store created it."""
        self._stop.set()
        if self._remover is not None and self._remover is not threading.current_thread():
            self._remover.join(5)
        if self._owns_client:
            self.client.close()

    # -- merge -------------------------------------------------------------
    def _create(self, sid: str, change: session.Change) -> bool:
        """Insert a new session's document; over an expired one only, never a live one."""
        collection = self._coll()
        while True:
            now = _now()
            expires = self._expiry(change.expires, now)
            if expires <= now:  # nothing to write; the ID must still be free
                collection.delete_one({"_id": sid, "expires": {"$lte": now}})
                return collection.find_one({"_id": sid, **_live(now)}, {"_id": 1}) is None
            doc = {"_id": sid, **self._fields(change.text, expires, now)}
            try:
                collection.insert_one(doc)
                return True
            except self._duplicate_key:
                pass
            del doc["_id"]
            dead = {"_id": sid, "$nor": [_live(now)]}  # expired, or an expires that is no date
            if collection.replace_one(dead, doc).matched_count:
                return True  # it had expired
            if collection.find_one({"_id": sid, **_live(now)}, {"_id": 1}) is not None:
                return False  # a live session has this ID
            # Deleted between the insert and the replace: insert again.

    def _compare_and_set(self, sid: str, change: session.Change) -> bool:
        """Write the change if ``session`` is still what the request loaded, else apply it to
        what is stored and compare-and-set again."""
        collection = self._coll()
        # stringify=False: read first, and tell the stored record from the loaded one by its
        # JSON.  A sub-document in a query compares loosely (MongoDB: 1 and 1.0 alike;
        # mongomock: 1 and true too, and keys in any order), and the request's own record must
        # be written, keys in its order, only when nothing was written since its load (rule 3).
        seen: Any = change.base if self.stringify else _UNREAD
        text, expires = change.text, change.expires
        while True:
            now = _now()
            if seen is not _UNREAD:
                at = self._expiry(expires, now)
                query = {"_id": sid, "session": seen, **_live(now)}
                if not change.keep_later and at <= now:  # written already expired: deleted
                    if collection.delete_one(query).deleted_count:
                        return True
                else:
                    fields = self._fields(text, at, now)
                    update = {"$set": fields}
                    if change.keep_later:  # the later of the stored expiry and this one
                        update["$max"] = {"expires": fields.pop("expires")}
                    if collection.update_one(query, update).matched_count:
                        return True
            doc = collection.find_one({"_id": sid, **_live(now)}, {"session": 1})
            if doc is None:
                return False  # destroyed, regenerated away or expired: never resurrected
            seen = doc.get("session")
            stored = self._text(sid, seen)
            if stored is None or stored == change.base:  # not a session, or the one loaded
                text, expires = change.text, change.expires
            else:
                text, expires = change.apply(stored)

    def _set_fields(self, sid: str, change: session.Change) -> bool:
        """stringify=False: ``$set``/``$unset`` of the keys this request changed, in one update
        of the live document, with its cookie's times unless another request stored a cookie
        that expires later (then merged whole, as apply() keeps that cookie's times)."""
        sets, deleted = change.changes()
        if (change._changes_cookie_attributes() or _moves_keys(change) or _LONE.search(change.text)
                or not all(_is_path(key) for key in (*sets, *deleted))):
            return self._compare_and_set(sid, change)  # merged whole (see session.Change.apply)
        now = _now()
        expires = self._expiry(change.expires, now)
        data = {"session." + key: value for key, value in sets.items()}
        unset = {"session." + key: "" for key in deleted}
        # A cookie that is an object (not an array holding one) with both times, so the two
        # $set paths replace them in place; any other goes through the compare-and-set.
        live = {"_id": sid, "session.cookie": {"$type": "object", "$not": {"$type": "array"}},
                "session.cookie.originalMaxAge": {"$exists": True},
                "session.cookie.expires": {"$exists": True}, **_live(now)}
        collection = self._coll()
        if not change.keep_later and expires <= now:  # written already expired: deleted
            if collection.delete_one(live).deleted_count:
                return True
        else:
            # The cookie's two times only: its attributes keep what another request stored.
            cookie = _to_bson({"cookie": change.cookie()})["cookie"]
            mine = {**data, "session.cookie.originalMaxAge": cookie.get("originalMaxAge"),
                    "session.cookie.expires": cookie.get("expires")}
            if self.touch_after > 0:
                mine["lastModified"] = now
            update = _update(mine, unset)
            query = live
            if change.keep_later:
                # Only over a stored cookie that expires no later than this one (Change.keeps:
                # a browser-session cookie, null, expires before any date); the document's
                # expires, which a touch or the ttl may have set later, becomes the later one.
                at, null = cookie.get("expires"), {"session.cookie.expires": None}
                query = {**live, "$and": [{"$or": [null] if at is None else [
                    null, {"session.cookie.expires": {"$lte": at}}]}]}
                update["$max"] = {"expires": expires}
            else:
                update["$set"]["expires"] = expires
            if collection.update_one(query, update).matched_count:
                return True
        # The stored cookie expires later (kept, its times noted for the response), the session
        # is not a document here, or it is gone (False: never resurrected).
        return self._compare_and_set(sid, change)

    def _fields(self, text: str, expires: datetime, now: datetime) -> dict[str, Any]:
        """``session`` (in the configured form), ``expires`` and, with touch_after, ``lastModified``."""
        fields = {"session": text if self.stringify else _to_bson(_bson_record(text)),
                  "expires": expires}
        if self.touch_after > 0:
            fields["lastModified"] = now
        return fields

    def _expiry(self, expires: Optional[float], now: datetime) -> datetime:
        """A change's expiry (epoch seconds, None: the ttl from now) as a BSON date."""
        at = now.timestamp() + self.ttl if expires is None else expires
        return datetime.fromtimestamp(at, timezone.utc)

    def _text(self, sid: str, value: Any) -> Optional[str]:
        """A stored ``session`` as JSON text: a string as it is, a sub-document encoded."""
        if type(value) is str:
            return value
        try:
            if isinstance(value, bytes):
                return value.decode("utf-8")
            return session.encode_record(_from_bson(value))
        except (ValueError, TypeError, RecursionError) as exc:
            log.warning("ignoring unreadable session document %.6s...: %s", sid, exc)
            return None

    def _after_fork_in_child(self) -> None:
        """A new index lock: a parent's thread may have held it at the fork, making the TTL
        index on the first request.  (pymongo's clients see the fork themselves.)"""
        self._index_lock = threading.Lock()

    # -- helpers -----------------------------------------------------------
    def _coll(self) -> Any:
        """The collection, with the TTL index created on first use (not at construction,
        so building a store never blocks on an unreachable server)."""
        if not self._index_ready:
            with self._index_lock:
                if not self._index_ready:
                    try:
                        self.collection.create_index([("expires", 1)], expireAfterSeconds=0)
                    except self._operation_failure as exc:
                        if exc.code not in _INDEX_CONFLICTS:
                            raise
                        log.warning("keeping the existing index on %s.expires: %s",
                                    self.collection.name, exc)
                    self._index_ready = True
        return self.collection

    def _expires(self, record: dict[str, Any], now: datetime) -> datetime:
        return datetime.fromtimestamp(self.expiry_time(record, now.timestamp()), timezone.utc)

    def _decode(self, sid: str, value: Any) -> Optional[dict[str, Any]]:
        try:
            if isinstance(value, (str, bytes)):
                return session.decode_record(value)
            if isinstance(value, dict) and isinstance(value.get("cookie"), dict):
                return _from_bson(value)  # type: ignore[no-any-return]  # of a dict: a dict
            raise ValueError("session is neither a JSON string nor a document with a cookie")
        except ValueError as exc:
            log.warning("ignoring unreadable session document %.6s...: %s", sid, exc)
            return None

    def __repr__(self) -> str:
        return (f"<MongoStore {self.collection.full_name} ttl={self.ttl} "
                f"auto_remove={self.auto_remove!r}>")


def _live(now: datetime) -> dict[str, Any]:
    """connect-mongo's filter for documents that have not expired."""
    return {"$or": [{"expires": {"$exists": False}}, {"expires": {"$gt": now}}]}


def _is_path(key: str) -> bool:
    """Whether ``session.<key>`` addresses that one key in an update."""
    return bool(key) and "." not in key and not key.startswith("$") and "\0" not in key


_UNREAD: Any = object()  # _compare_and_set: the stored session, not read yet


def _moves_keys(change: session.Change) -> bool:
    """Whether ``$set`` of the request's changes would leave its keys in another order than
    its record's: it keeps a key where it is stored (a key deleted and set again goes last),
    and MongoDB 5.0 and later add several new fields in lexicographic order, not the
    record's.  Such a record is written whole."""
    # (base is not None: a loaded session's)
    mine, base = session._decode(change.text), session._decode(change.base)  # type: ignore[arg-type]
    added = [key for key in mine if key not in base]
    return len(added) > 1 or list(mine) != [key for key in base if key in mine] + added


def _update(fields: dict[str, Any], unset: dict[str, Any]) -> dict[str, Any]:
    """An update document with only the operators that have fields (MongoDB refuses empty ones)."""
    update = {}
    if fields:
        update["$set"] = fields
    if unset:
        update["$unset"] = unset
    return update


def _now() -> datetime:
    # BSON dates hold milliseconds: cut to them, so what is written compares as computed.
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# A JSON escape of a surrogate: the text may hold a lone one, which BSON (UTF-8) cannot.
_LONE = re.compile(r"\\u[dD][89a-fA-F]")


def _bson_record(text: str) -> dict[str, Any]:
    """The record of ``text`` for a sub-document: a lone surrogate (JSON text another app
    wrote may escape one) becomes U+FFFD, as js-bson writes it."""
    record = session.decode_record(text)
    return _js_strings(record) if _LONE.search(text) else record


def _js_strings(value: Any) -> Any:
    if isinstance(value, str):
        return session._js_utf8(value).decode("utf-8")
    if isinstance(value, dict):
        return {_js_strings(k): _js_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_strings(v) for v in value]
    return value


def _to_bson(record: dict[str, Any]) -> dict[str, Any]:
    """stringify=False: ``cookie.expires`` becomes a BSON date, as Express stores it."""
    expires = session.expires_at(record)
    if expires is not None:
        record["cookie"]["expires"] = datetime.fromtimestamp(expires, timezone.utc)
    return record


def _from_bson(value: Any) -> Any:
    """A stored sub-document as JSON-ready data, as express sees it through JSON.stringify:
    dates become ISO strings, and BSON's own types (an ObjectId that mongoose wrote, say)
    their js-bson toJSON forms."""
    if isinstance(value, dict):
        return {k: _from_bson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_bson(v) for v in value]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)  # pymongo returns naive UTC by default
        value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    kind = type(value).__name__
    if kind == "ObjectId":
        return str(value)  # its hex, as ObjectId#toJSON
    if kind == "Decimal128":
        return {"$numberDecimal": str(value)}
    if isinstance(value, bytes):  # bson.Binary is a bytes subclass
        return base64.b64encode(value).decode("ascii")
    return value


def _remove_expired(ref: "weakref.ref[MongoStore]", stop: threading.Event) -> None:
    """auto_remove="interval": delete expired documents until the store is closed or collected."""
    while True:
        store = ref()
        if store is None:
            return
        interval = store.auto_remove_interval
        del store
        if stop.wait(interval):
            return
        store = ref()
        if store is None:
            return
        try:
            store.prune()
        except store._driver_error:  # a failed sweep must not end the thread: the next retries
            log.exception("MongoStore: deleting expired sessions failed")
        del store


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _import_pymongo() -> Any:
    try:
        import pymongo
        import pymongo.errors
    except ImportError as exc:
        raise ImportError("MongoStore needs the pymongo package: pip install pymongo "
                          "(or pip install 'express-session-py[mongo]')") from exc
    return pymongo
