"""
Proxy authentication (RFC 9110 §11.7.1 C{Proxy-Authorization: Basic ...}) against an htpasswd
file (its format, and which hashes are accepted: L{caplab.proxy.htpasswd}; users with Apache
MD5 hashes are named in one warning in the log, as bcrypt is much stronger).

Hash checks are slow on purpose (tens of milliseconds), so they run in a thread pool of their
own (not the reactor's, which name lookups and disk-cache commits use) and the reactor never
waits for them; L{caplab.proxy.throttle} keeps a flood of wrong passwords from one address
from delaying other clients' logins.  A good check is remembered for a while
(C{cacheSeconds}) under a keyed digest of the header, never the header itself, so a browser
sending the same header with each request costs one slow check, not one per request; checks
of the same header under way at once are done once.  An unknown user's password is checked
against one of the file's hashes (L{decoyHash}), so that how long a refusal takes does not
tell which user names exist; a password longer than L{MAX_PASSWORD} is refused as an unknown
user's is, its own hash never worked out (SHA-crypt's cost grows with the password's length).
Passwords are never logged; failures are, with the client's address and the user name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from caplab.proxy.htpasswd import (
    AuthFileError,
    PasswordHash,
    loadHtpasswd,
    parseHash,
    parseHtpasswd,
)
from caplab.proxy.throttle import (
    CheckScheduler,
    FailureLog,
    FailureTable,
    Overloaded,
    throttleKey,
)

__all__ = [
    "DEFAULT_REALM",
    "AuthFileError",
    "HtpasswdAuthenticator",
    "PasswordHash",
    "basicCredentials",
    "loadHtpasswd",
    "parseBasic",
    "parseHash",
    "parseHtpasswd",
]

log = Logger(namespace="caplab.proxy.auth")

#: Seconds before a request refused unchecked (too many checks waiting from its address) is
#: answered, at least.
REFUSAL_DELAY = 1.0

#: The default realm of C{Proxy-Authenticate: Basic realm="..."}.
DEFAULT_REALM = "caplab proxy"

#: The longest password checked, in bytes: a longer one is refused as an unknown user's is.
MAX_PASSWORD = 1024

#: The most threads hash checks run in (L{defaultCheckThreads}), whatever the cores.
MAX_CHECK_THREADS = 4


def parseBasic(proxyAuthorization: bytes | None) -> tuple[str, bytes] | None:
    """
    The user name and password of a C{Basic} credentials header value, or None if there is
    none or it is malformed.
    """
    if not proxyAuthorization:
        return None
    scheme, _, token = proxyAuthorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        name = user.decode("utf-8")
    except UnicodeDecodeError:
        name = user.decode("latin-1")
    return name, password


def basicCredentials(user: str, password: str) -> bytes:
    """
    The C{Proxy-Authorization} value for C{user} and C{password} (the client side).
    """
    raw = f"{user}:{password}".encode()
    return b"Basic " + base64.b64encode(raw)


def defaultCheckThreads() -> int:
    """
    Threads for hash checks: half the cores, at least 1 and at most L{MAX_CHECK_THREADS}, so
    that checks never take every core from the reactor (nor, on a big machine, more threads
    than a login flood needs: L{caplab.proxy.throttle} shares them out).
    """
    return max(1, min(MAX_CHECK_THREADS, (os.cpu_count() or 2) // 2))


def plural(count: int, noun: str) -> str:
    """
    C{count} and C{noun}, with an s unless C{count} is 1: C{"1 user"}, C{"2 users"}.
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class HtpasswdAuthenticator:
    """
    An L{IAuthenticator} for the users in an htpasswd file, reloadable.

    @ivar realm: the realm of the C{Proxy-Authenticate} challenge.
    """

    def __init__(
        self,
        path: str,
        realm: str = DEFAULT_REALM,
        reactor: Any = None,
        threadPool: ThreadPool | None = None,
        cacheSeconds: float = 300.0,
        cacheSize: int = 1024,
        threads: int | None = None,
        failures: FailureTable | None = None,
        failureLog: FailureLog | None = None,
    ) -> None:
        """
        @param reactor: for the thread pool results, the clock of the cache and of the
            throttling (the global reactor by default); an L{IReactorFromThreads} and
            L{IReactorTime}.
        @param threadPool: where the hash checks run (default: a pool of C{threads} threads
            of its own, started at the first check and stopped when the reactor stops).
        @param cacheSeconds: how long a good check is remembered (0: never).
        @param threads: checks run at once (default: L{defaultCheckThreads}).
        @param failures: failed checks per client address (default: a L{FailureTable}).
        @param failureLog: logs failures (default: a L{FailureLog}).
        @raise AuthFileError: the file cannot be used.
        """
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.path = path
        self.realm = realm
        self._reactor: IReactorFromThreads = reactor
        self._clock: IReactorTime = reactor
        self._threadPool = threadPool
        self._threads = threads or defaultCheckThreads()
        self._cacheSeconds = cacheSeconds
        self._cacheSize = cacheSize
        self._cacheKey = os.urandom(32)
        self._cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        #: keyed digest -> Deferreds of the requests waiting for the check under way
        self._checking: dict[bytes, list[Deferred[bool]]] = {}
        self.failures = failures if failures is not None else FailureTable(reactor)
        self.failureLog = failureLog if failureLog is not None else FailureLog(reactor)
        self.scheduler = CheckScheduler(reactor, self._inThread, self.failures, slots=self._threads)
        self.users: dict[str, PasswordHash] = {}
        #: what an unknown user's password is checked against (L{decoyHash})
        self._decoy: PasswordHash | None = None
        #: path -> the users with weak hashes last warned about (this authenticator's own,
        #: so that a reload warns again only if they changed)
        self._warned: dict[str, frozenset[str]] = {}
        self.use(loadHtpasswd(path))

    def reload(self) -> str:
        """
        Read the file again and use the new users (remembered checks are forgotten).

        @return: a summary for the log.
        @raise AuthFileError: the file cannot be used; the old users stay.
        """
        return self.use(self.load())

    def load(self) -> dict[str, PasswordHash]:
        """
        Read the file (may run in a thread); change nothing.

        @raise AuthFileError: the file cannot be used.
        """
        return loadHtpasswd(self.path)

    def use(self, users: dict[str, PasswordHash]) -> str:
        """
        Use C{users} (from L{load}) from now on; remembered checks are forgotten.  Users with
        Apache MD5 hashes are named in one warning (per file and set of such users).

        @return: a summary for the log (L{summary}).
        """
        self.users = users
        self._decoy = decoyHash(users)
        self._cache.clear()
        self._checking = {}  # checks under way are of the old users: none is shared
        weak = frozenset(name for name, stored in users.items() if stored.weak)
        if weak and self._warned.get(self.path) != weak:
            names = ", ".join(repr(name) for name in sorted(weak)[:5])
            more = f" and {len(weak) - 5} more" if len(weak) > 5 else ""
            log.warn(
                "auth file {path}: {count} {have} Apache MD5 ($apr1$) hashes ({names}"
                "{more}), which are fast to guess; bcrypt is much stronger: htpasswd -B "
                "{path} USER",
                path=self.path,
                count=plural(len(weak), "user"),
                have="has" if len(weak) == 1 else "have",
                names=names,
                more=more,
            )
        self._warned[self.path] = weak
        return self.summary()

    def summary(self) -> str:
        """
        One line for the log: how many users, and how many with weak hashes.
        """
        weak = sum(1 for stored in self.users.values() if stored.weak)
        text = plural(len(self.users), "user")
        if weak:
            text += f" ({weak} with Apache MD5 hashes: bcrypt is stronger)"
        return text

    def authenticate(
        self, proxyAuthorization: bytes | None, client: str | None = None
    ) -> Deferred[str | None]:
        """
        The user name if C{proxyAuthorization}, from client address C{client}, holds good
        credentials, else None.

        Checks are queued fairly between addresses; an address with many recent failures
        has its checks delayed, and with too many waiting it is refused (None) without a
        check, after its delay.
        """
        credentials = parseBasic(proxyAuthorization)
        if credentials is None:
            return succeed(None)
        assert proxyAuthorization is not None
        key = hmac.digest(self._cacheKey, proxyAuthorization.strip(), hashlib.sha256)
        now = self._clock.seconds()
        remembered = self._cache.get(key)
        if remembered is not None:
            if remembered[1] > now:
                self._cache.move_to_end(key)
                return succeed(remembered[0])
            del self._cache[key]
        user, password = credentials
        users = self.users
        waiting = self._checking.get(key)
        if waiting is not None:
            d: Deferred[bool] = Deferred()
            waiting.append(d)
        else:
            stored = users.get(user)
            if len(password) > MAX_PASSWORD:
                # Refused as an unknown user's: its first MAX_PASSWORD bytes are checked
                # against the decoy, so it costs what any refusal does, never more.
                stored, password = None, password[:MAX_PASSWORD]
            decoy = self._decoy if stored is None else None
            try:
                d = self.scheduler.submit(throttleKey(client), _check, stored, password, decoy)
            except Overloaded:
                self.failureLog.failed(client, user, "refused unchecked: too many waiting")
                # Answered after a while (the address's delay, a second at least), so that
                # a client over its share does not turn the refusals into a busy loop.
                delay = max(REFUSAL_DELAY, self.failures.delay(throttleKey(client)))
                return deferLater(self._clock, delay, lambda: None)
            waiting = self._checking[key] = []
            d.addBoth(self._checked, key, waiting)

        def checked(good: bool) -> str | None:
            if not good:
                self.failures.record(throttleKey(client))
                self.failureLog.failed(client, user)
                return None
            if self._cacheSeconds > 0 and self.users is users:
                self._cache[key] = (user, self._clock.seconds() + self._cacheSeconds)
                while len(self._cache) > self._cacheSize:
                    self._cache.popitem(last=False)
            return user

        return d.addCallback(checked)

    def _checked(
        self, result: bool | Failure, key: bytes, waiters: list[Deferred[bool]]
    ) -> bool | Failure:
        """
        A check is done: give its result to the requests that waited for the same one.
        """
        if self._checking.get(key) is waiters:
            del self._checking[key]
        for waiting in waiters:
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(result)
        return result

    def _inThread(self, f: Callable[..., bool], *args: Any) -> Deferred[bool]:
        pool = self._threadPool
        if pool is None:
            pool = self._threadPool = ThreadPool(
                minthreads=0, maxthreads=self._threads, name="caplab-auth"
            )
            pool.start()
            self._reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
                "during", "shutdown", self._stop
            )
        return deferToThreadPool(self._reactor, pool, f, *args)

    def _stop(self) -> None:
        self.scheduler.stop()
        self.failureLog.stop()
        if self._threadPool is not None:
            self._threadPool.stop()


def decoyHash(users: dict[str, PasswordHash]) -> PasswordHash | None:
    """
    The hash an unknown user's password is checked against, so that a wrong user name costs
    what a wrong password does: the first user's of the users' most common L{cost
    <PasswordHash.cost>} (a fixed hash would cost more or less than the file's, and the
    difference would tell which names exist).  None if there are no users.
    """
    if not users:
        return None
    common = Counter(stored.cost for stored in users.values()).most_common(1)[0][0]
    return next(stored for stored in users.values() if stored.cost == common)


def _check(stored: PasswordHash | None, password: bytes, decoy: PasswordHash | None = None) -> bool:
    """
    Whether C{password} matches C{stored}; for an unknown user (C{stored} None) it is
    checked against C{decoy} (L{decoyHash}) and refused, so that it costs as much as a
    wrong password.
    """
    try:
        if stored is None:
            if decoy is not None:
                decoy.verify(password)
            return False
        return stored.verify(password)
    except ValueError:
        return False
