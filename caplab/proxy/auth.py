"""
Proxy authentication (RFC 9110 §11.7.1 C{Proxy-Authorization: Basic ...}) against an htpasswd
file.

The file has one C{user:hash} a line, as C{htpasswd -B} (bcrypt, C{$2y$}/C{$2b$}/C{$2a$}) or
C{mkpasswd -m sha-512} / C{-m sha-256} (SHA-crypt, C{$6$}/C{$5$}) write them; C{#} comment lines
and blank lines are ignored.  Other schemes (Apache MD5 C{$apr1$}, C{{SHA}}, DES crypt, plain
text) are refused when the file is loaded, so a weak or mistyped file never half-works.

Hash checks are slow on purpose (tens of milliseconds), so they run in a thread pool and the
reactor never waits for them.  A good check is remembered for a while (C{cacheSeconds}) under
a keyed digest of the header, never the header itself, so a browser sending the same header
with each request costs one slow check, not one per request.  Credentials are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import bcrypt
from passlib.hash import sha256_crypt, sha512_crypt
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")

#: A bcrypt hash of a random password: checked for unknown users, so that a wrong user name
#: takes as long to refuse as a wrong password.
_DUMMY_HASH = b"$2b$10$sYXr0tT7dg/LfzEjtheehOh9iwo1cqxBQu6JcXKmilYI8Hg7kGsUK"

#: The default realm of C{Proxy-Authenticate: Basic realm="..."}.
DEFAULT_REALM = "caplab proxy"


class AuthFileError(Exception):
    """
    The htpasswd file cannot be used: unreadable, or a line that is not C{user:hash} with a
    supported hash.  The message names the file and line (and never a hash).
    """


@dataclass(frozen=True)
class PasswordHash:
    """
    One user's stored hash and the scheme that checks it.
    """

    scheme: str  # "bcrypt", "sha256-crypt" or "sha512-crypt"
    value: str

    def __repr__(self) -> str:
        return f"PasswordHash({self.scheme!r}, ...)"

    def verify(self, password: bytes) -> bool:
        """
        Whether C{password} matches (slow: call it in a thread).
        """
        if self.scheme == "bcrypt":
            # Like Apache's htpasswd, only the first 72 bytes count for bcrypt.
            return bcrypt.checkpw(password[:72], self.value.encode("ascii"))
        handler = sha512_crypt if self.scheme == "sha512-crypt" else sha256_crypt
        return bool(handler.verify(password, self.value))


def parseHash(text: str) -> PasswordHash:
    """
    The L{PasswordHash} that C{text} stores.

    @raise ValueError: a scheme caplab does not accept, or a malformed hash.
    """
    if text.startswith("$2"):
        if not _BCRYPT.fullmatch(text):
            raise ValueError("malformed bcrypt hash")
        return PasswordHash("bcrypt", text)
    for prefix, scheme, handler in (
        ("$5$", "sha256-crypt", sha256_crypt),
        ("$6$", "sha512-crypt", sha512_crypt),
    ):
        if text.startswith(prefix):
            try:
                with warnings.catch_warnings():
                    # passlib warns (and clamps) where glibc would too, e.g. rounds=10.
                    warnings.simplefilter("error")
                    parsed = handler.from_string(text)
            except (ValueError, Warning):
                parsed = None
            if parsed is None or not parsed.checksum:
                raise ValueError(f"malformed {scheme} hash")
            return PasswordHash(scheme, text)
    if text.startswith("$apr1$"):
        raise ValueError("Apache MD5 ($apr1$) hashes are too weak: use htpasswd -B (bcrypt)")
    if text.startswith("{SHA}"):
        raise ValueError("{SHA} hashes are too weak: use htpasswd -B (bcrypt)")
    raise ValueError("unsupported hash: use bcrypt (htpasswd -B) or SHA-crypt ($5$, $6$)")


def parseHtpasswd(lines: Iterable[str], source: str) -> dict[str, PasswordHash]:
    """
    The users in htpasswd C{lines} from C{source} (a file name, for messages).

    @raise AuthFileError: a line is not C{user:hash} with a supported hash, or a user is
        listed twice.
    """
    users: dict[str, PasswordHash] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, hashText = line.partition(":")
        if not colon or not user:
            raise AuthFileError(f"{source}:{number}: not a user:hash line")
        if user in users:
            raise AuthFileError(f"{source}:{number}: user {user!r} is listed twice")
        try:
            users[user] = parseHash(hashText.strip())
        except ValueError as e:
            raise AuthFileError(f"{source}:{number}: user {user!r}: {e}") from None
    return users


def loadHtpasswd(path: str) -> dict[str, PasswordHash]:
    """
    The users in the htpasswd file at C{path}.

    @raise AuthFileError: unreadable, or see L{parseHtpasswd}.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return parseHtpasswd(f, path)
    except OSError as e:
        raise AuthFileError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise AuthFileError(f"{path}: not UTF-8 text ({e.reason})") from None


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


class HtpasswdAuthenticator:
    """
    An L{IAuthenticator} for the users in an htpasswd file, reloadable.

    @ivar realm: the realm of the C{Proxy-Authenticate} challenge.
    """

    log = Logger()

    def __init__(
        self,
        path: str,
        realm: str = DEFAULT_REALM,
        reactor: Any = None,
        threadPool: ThreadPool | None = None,
        cacheSeconds: float = 300.0,
        cacheSize: int = 1024,
    ) -> None:
        """
        @param reactor: for the thread pool results and the clock of the cache (the global
            reactor by default); an L{IReactorFromThreads} and L{IReactorTime}.
        @param threadPool: where the hash checks run (the reactor's by default).
        @param cacheSeconds: how long a good check is remembered (0: never).
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
        self._cacheSeconds = cacheSeconds
        self._cacheSize = cacheSize
        self._cacheKey = os.urandom(32)
        self._cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self.users = loadHtpasswd(path)

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
        Use C{users} (from L{load}) from now on; remembered checks are forgotten.

        @return: a summary for the log.
        """
        self.users = users
        self._cache.clear()
        return f"{len(self.users)} users"

    def authenticate(self, proxyAuthorization: bytes | None) -> Deferred[str | None]:
        """
        The user name if C{proxyAuthorization} holds good credentials, else None.
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
        stored = self.users.get(user)
        users = self.users
        d = self._inThread(_check, stored, password)

        def checked(good: bool) -> str | None:
            if not good:
                self.log.info("proxy authentication failed for user {user!r}", user=user)
                return None
            if self._cacheSeconds > 0 and self.users is users:
                self._cache[key] = (user, self._clock.seconds() + self._cacheSeconds)
                while len(self._cache) > self._cacheSize:
                    self._cache.popitem(last=False)
            return user

        return d.addCallback(checked)

    def _inThread(self, f: Callable[..., bool], *args: Any) -> Deferred[bool]:
        pool = self._threadPool
        if pool is None:
            pool = self._reactor.getThreadPool()  # type: ignore[attr-defined]
        return deferToThreadPool(self._reactor, pool, f, *args)


def _check(stored: PasswordHash | None, password: bytes) -> bool:
    """
    Whether C{password} matches C{stored}; an unknown user costs as much as a wrong password.
    """
    if stored is None:
        bcrypt.checkpw(password[:72], _DUMMY_HASH)
        return False
    try:
        return stored.verify(password)
    except ValueError:
        return False
