"""
Tests for L{caplab.proxy.auth}: htpasswd parsing, Basic credentials, checks off the reactor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from caplab.proxy import auth
from caplab.proxy.auth import (
    AuthFileError,
    HtpasswdAuthenticator,
    PasswordHash,
    basicCredentials,
    parseBasic,
    parseHtpasswd,
)
from caplab.proxy.hooks import IAuthenticator
from tests.test_policy import TempFiles

#: "s3cret" hashed by each supported scheme (bcrypt at cost 4 to keep the tests quick; the
#: $2y$ prefix is what Apache's htpasswd -B writes).
BCRYPT = "$2y$04$wlszkyh1ecgRyo/v36kj2OQ1tjilLLuXsU65QN2rVzzK3sp2tGeXK"
SHA512 = (
    "$6$hk0yBmnwGSQPHFyV$hP/cPzah32UBclkkc0N05f.0ya1swlPULCxkZ5VCDXPDrQR5pVN3hFaZCVTzKnWZAg1"
    ".oW377/RvCyTnL7Cy60"
)
SHA256 = "$5$V9r1egPcTkNbojil$De4R1KxJDwCbqF5z/ktRM62d9hePhPfr5JWBJSXgzn/"
#: As htpasswd writes by default (Apache MD5); made with libpass.
APR1 = "$apr1$Kx.WcFev$skNKmPSfKXPtRVCpWxIAF1"

HTPASSWD = f"# users\nalice:{BCRYPT}\n\nbob:{SHA512}\ncarol:{SHA256}\n"


class FakeThreadPool:
    """
    A thread pool that runs nothing until L{runAll}, in the calling thread.
    """

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[..., None], Callable[..., Any], tuple[Any, ...]]] = []

    def callInThreadWithCallback(
        self, onResult: Callable[..., None], f: Callable[..., Any], *args: Any, **kw: Any
    ) -> None:
        self.queued.append((onResult, f, args))

    def runAll(self) -> None:
        while self.queued:
            onResult, f, args = self.queued.pop(0)
            try:
                result = f(*args)
            except BaseException as e:
                onResult(False, e)
            else:
                onResult(True, result)


class FakeReactor(Clock):
    """
    A clock that also takes calls from (fake) threads and runs them at once.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class HtpasswdTests(SynchronousTestCase):
    """
    The htpasswd file format.
    """

    def test_schemes(self) -> None:
        """
        bcrypt and SHA-256/512 crypt hashes are read, comments and blank lines skipped.
        """
        users = parseHtpasswd(HTPASSWD.splitlines(), "users")
        self.assertEqual(
            {name: h.scheme for name, h in users.items()},
            {"alice": "bcrypt", "bob": "sha512-crypt", "carol": "sha256-crypt"},
        )
        for stored in users.values():
            self.assertTrue(stored.verify(b"s3cret"))
            self.assertFalse(stored.verify(b"s3creT"))
            self.assertFalse(stored.weak)
        [apr1] = parseHtpasswd([f"erin:{APR1}"], "u").values()
        self.assertEqual(apr1.scheme, "apr-md5")
        self.assertTrue(apr1.weak)
        self.assertTrue(apr1.verify(b"s3cret"))
        self.assertFalse(apr1.verify(b"s3creT"))
        for prefix in ("$2a$", "$2b$"):
            [other] = parseHtpasswd([f"dave:{BCRYPT.replace('$2y$', prefix)}"], "u").values()
            self.assertTrue(other.verify(b"s3cret"))

    def test_hashNotInRepr(self) -> None:
        """
        A stored hash does not show in reprs (and so in logged tracebacks).
        """
        users = parseHtpasswd([f"alice:{BCRYPT}"], "users")
        self.assertNotIn(BCRYPT[10:], repr(users))

    def test_refused(self) -> None:
        """
        Weak or unknown schemes, malformed hashes and malformed lines name file and line,
        never the hash.
        """
        for line, why in [
            ("alice:$apr1$abc$def", "malformed apr-md5"),
            ("alice:$apr1$" + "x" * 10 + "$" + APR1[15:], "malformed apr-md5"),
            ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "{SHA}"),
            ("alice:plaintext", "unsupported hash"),
            ("alice:abhWCwoTZY2c6", "unsupported hash"),
            ("alice:$2y$04$short", "malformed bcrypt"),
            ("alice:" + BCRYPT.replace("$2y$", "$2x$"), "malformed bcrypt"),
            ("alice:$6$rounds=10$salt$" + SHA512[20:], "malformed sha512-crypt"),
            ("alice:$6$saltsalt$", "malformed sha512-crypt"),
            ("alice:$5$salt$x", "malformed sha256-crypt"),
            ("no colon here", "not a user:hash"),
            (":" + BCRYPT, "not a user:hash"),
        ]:
            with self.assertRaises(AuthFileError) as caught:
                parseHtpasswd(["# header", line], "users.htpasswd")
            message = str(caught.exception)
            self.assertTrue(message.startswith("users.htpasswd:2: "), message)
            self.assertIn(why, message)
            hashText = line.partition(":")[2]
            if hashText:
                self.assertNotIn(hashText, message)

    def test_duplicateUser(self) -> None:
        """
        A user listed twice is an error (which line would win is not obvious).
        """
        with self.assertRaises(AuthFileError) as caught:
            parseHtpasswd([f"alice:{BCRYPT}", f"alice:{SHA256}"], "f")
        self.assertIn("f:2: user 'alice' is listed twice", str(caught.exception))


class BasicTests(SynchronousTestCase):
    """
    C{Proxy-Authorization: Basic} parsing.
    """

    def test_roundTrip(self) -> None:
        """
        L{parseBasic} reads what L{basicCredentials} writes, a colon in the password kept.
        """
        self.assertEqual(parseBasic(basicCredentials("al", "pa:ss")), ("al", b"pa:ss"))
        self.assertEqual(parseBasic(b"basic  YWw6cGE="), ("al", b"pa"))
        self.assertEqual(parseBasic(basicCredentials("jürgen", "x")), ("jürgen", b"x"))

    def test_malformed(self) -> None:
        """
        Missing, other schemes, bad base64 and no colon give None.
        """
        for value in [None, b"", b"Bearer abc", b"Basic !!!", b"Basic YWxpY2U=", b"Basic"]:
            self.assertIsNone(parseBasic(value), value)


class AuthenticatorTests(TempFiles, SynchronousTestCase):
    """
    L{HtpasswdAuthenticator} with a fake thread pool and clock.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.pool = FakeThreadPool()
        self.path = self.writeFile("users", HTPASSWD)
        self.authenticator = HtpasswdAuthenticator(
            self.path,
            reactor=self.reactor,
            threadPool=self.pool,  # type: ignore[arg-type]
        )

    def authenticate(self, value: bytes | None) -> str | None:
        d = self.authenticator.authenticate(value)
        self.pool.runAll()
        return self.successResultOf(d)

    def test_contract(self) -> None:
        """
        It fits L{IAuthenticator}, with the default realm.
        """
        authenticator: IAuthenticator = self.authenticator
        self.assertEqual(authenticator.realm, "caplab proxy")

    def test_goodAndBad(self) -> None:
        """
        Good credentials give the user name; a wrong password, an unknown user or no
        credentials give None.
        """
        for user in ["alice", "bob", "carol"]:
            self.assertEqual(self.authenticate(basicCredentials(user, "s3cret")), user)
        self.assertIsNone(self.authenticate(basicCredentials("alice", "wrong")))
        self.assertIsNone(self.authenticate(basicCredentials("mallory", "s3cret")))
        self.assertIsNone(self.authenticate(None))

    def test_checkedInThePool(self) -> None:
        """
        The hash check waits for the thread pool: nothing is decided in the reactor thread.
        """
        d = self.authenticator.authenticate(basicCredentials("alice", "s3cret"))
        self.assertNoResult(d)
        self.assertEqual(len(self.pool.queued), 1)
        self.pool.runAll()
        self.assertEqual(self.successResultOf(d), "alice")

    def test_goodCheckRemembered(self) -> None:
        """
        A good check is remembered for C{cacheSeconds}: the same header is accepted without
        another check until then.
        """
        value = basicCredentials("bob", "s3cret")
        self.assertEqual(self.authenticate(value), "bob")
        self.assertEqual(self.successResultOf(self.authenticator.authenticate(value)), "bob")
        self.reactor.advance(301)
        d = self.authenticator.authenticate(value)
        self.assertNoResult(d)
        self.pool.runAll()
        self.assertEqual(self.successResultOf(d), "bob")

    def test_badCheckNotRemembered(self) -> None:
        """
        A failed check is checked again each time (no negative cache to poison).
        """
        value = basicCredentials("bob", "nope")
        self.assertIsNone(self.authenticate(value))
        d = self.authenticator.authenticate(value)
        self.assertNoResult(d)
        self.pool.runAll()

    def test_failureLoggedWithoutPassword(self) -> None:
        """
        A failed check logs the user name, never the password or the header.
        """
        value = basicCredentials("alice", "hunter2-password")
        with capturedLogs() as events:
            self.assertIsNone(self.authenticate(value))
        self.assertEqual(len(events), 1)
        text = repr(events)
        self.assertIn("alice", text)
        self.assertNotIn("hunter2", text)
        self.assertNotIn(value.decode()[6:], text)

    def test_reload(self) -> None:
        """
        L{HtpasswdAuthenticator.reload} reads the file again and forgets remembered checks;
        a broken file keeps the old users.
        """
        value = basicCredentials("alice", "s3cret")
        self.assertEqual(self.authenticate(value), "alice")
        self.writeFile("users", f"carol:{SHA256}\n")
        self.assertEqual(self.authenticator.reload(), "1 user")
        self.assertIsNone(self.authenticate(value))
        self.writeFile("users", "carol:$apr1$x$y\n")
        self.assertRaises(AuthFileError, self.authenticator.reload)
        self.assertEqual(self.authenticate(basicCredentials("carol", "s3cret")), "carol")

    def test_checkDuringReloadNotRemembered(self) -> None:
        """
        A check that finishes after a reload is not remembered for the new users.
        """
        value = basicCredentials("alice", "s3cret")
        d = self.authenticator.authenticate(value)
        self.writeFile("users", f"carol:{SHA256}\n")
        self.authenticator.reload()
        self.pool.runAll()
        self.assertEqual(self.successResultOf(d), "alice")
        self.assertNoResult(self.authenticator.authenticate(value))

    def test_overlongBcryptPassword(self) -> None:
        """
        As in Apache, only the first 72 bytes of a password count for bcrypt (bcrypt 5 would
        raise instead).
        """
        self.assertIsNone(self.authenticate(basicCredentials("alice", "x" * 100)))

    def test_unknownUserCostsAsMuch(self) -> None:
        """
        An unknown user's password is checked against a hash from the file, the first of
        the users' most common scheme and cost (so that a wrong name costs what most right
        names do, whatever hashes the file holds), then refused; a known user's against
        their own.
        """
        verified: list[str] = []
        original = PasswordHash.verify

        def recording(stored: PasswordHash, password: bytes) -> bool:
            verified.append(stored.value)
            return original(stored, password)

        self.patch(PasswordHash, "verify", recording)
        bcrypt5 = "$2y$05$" + BCRYPT[7:]
        self.writeFile("users", f"alice:{BCRYPT}\nbob:{SHA512}\ncarol:{bcrypt5}\ndave:{bcrypt5}\n")
        self.authenticator.use(self.authenticator.load())
        self.assertIsNone(self.authenticate(basicCredentials("mallory", "s3cret")))
        self.assertEqual(verified, [bcrypt5])
        self.assertIsNone(self.authenticate(basicCredentials("bob", "wrong")))
        self.assertEqual(verified, [bcrypt5, SHA512])
        self.writeFile("users", f"bob:{SHA512}\ncarol:{SHA256}\nerin:{SHA512}\n")
        self.authenticator.use(self.authenticator.load())
        self.assertIsNone(self.authenticate(basicCredentials("mallory", "s3cret")))
        self.assertEqual(verified[2:], [SHA512])

    def test_overlongPasswordRefusedAsUnknownUser(self) -> None:
        """
        A password over L{auth.MAX_PASSWORD} bytes is refused even when it is the user's
        own: its first L{auth.MAX_PASSWORD} bytes are checked against the decoy, as an
        unknown user's password is, and the user's own hash is never worked out for it (the
        cost of SHA-crypt grows with the password's length).  One of L{auth.MAX_PASSWORD}
        bytes is checked as usual.
        """
        from passlib.hash import sha256_crypt

        longest = "p" * auth.MAX_PASSWORD
        tooLong = "q" * (auth.MAX_PASSWORD + 1)
        hashes = {
            name: sha256_crypt.using(rounds=1000).hash(password)
            for name, password in [("long", longest), ("huge", tooLong)]
        }
        self.writeFile("users", "".join(f"{n}:{h}\n" for n, h in hashes.items()))
        self.authenticator.use(self.authenticator.load())
        verified: list[tuple[str, int]] = []
        original = PasswordHash.verify

        def recording(stored: PasswordHash, password: bytes) -> bool:
            verified.append((stored.value, len(password)))
            return original(stored, password)

        self.patch(PasswordHash, "verify", recording)
        self.assertEqual(self.authenticate(basicCredentials("long", longest)), "long")
        self.assertEqual(verified, [(hashes["long"], auth.MAX_PASSWORD)])
        with capturedLogs() as events:
            self.assertIsNone(self.authenticate(basicCredentials("huge", tooLong)))
        decoy = auth.decoyHash(self.authenticator.users)
        assert decoy is not None
        self.assertEqual(verified[1:], [(decoy.value, auth.MAX_PASSWORD)])
        self.assertEqual(len(events), 1)

    def test_checkThreads(self) -> None:
        """
        Hash checks run in half the cores' threads, at least 1 and at most
        L{auth.MAX_CHECK_THREADS} (as C{--auth-file}'s help says: see
        C{tests/test_policyfix_help.py}).
        """
        for cores, threads in [(None, 1), (1, 1), (2, 1), (6, 3), (8, 4), (64, 4)]:
            self.patch(auth.os, "cpu_count", lambda cores=cores: cores)
            self.assertEqual(auth.defaultCheckThreads(), threads, cores)
        self.assertEqual(auth.MAX_CHECK_THREADS, 4)

    def test_costClasses(self) -> None:
        """
        L{PasswordHash.cost} tells hashes that take as long to check apart: the scheme and
        its cost parameter (bcrypt's cost, SHA-crypt's rounds, 5000 if not written).
        """
        [a, b, c, d, e] = parseHtpasswd(
            [
                f"a:{BCRYPT}",
                "b:$2b$05$" + BCRYPT[7:],
                f"c:{SHA512}",
                "d:$6$rounds=5000$" + SHA512[3:],
                "e:$5$rounds=20000$" + SHA256[3:],
            ],
            "u",
        ).values()
        self.assertEqual(a.cost, ("bcrypt", 4))
        self.assertEqual(b.cost, ("bcrypt", 5))
        self.assertEqual(c.cost, ("sha512-crypt", 5000))
        self.assertEqual(d.cost, c.cost)
        self.assertEqual(e.cost, ("sha256-crypt", 20000))

    def test_unreadable(self) -> None:
        """
        A missing file is an L{AuthFileError} at construction.
        """
        with self.assertRaises(AuthFileError) as caught:
            HtpasswdAuthenticator(self.path + ".missing", reactor=self.reactor)
        self.assertIn("cannot read", str(caught.exception))


class RealThreadTests(TempFiles, TestCase):
    """
    With a real thread pool and the running reactor.
    """

    timeout = 20

    def test_checkedOffTheReactorThread(self) -> Deferred[None]:
        """
        The hash is checked in a pool thread, not the reactor's.
        """
        from twisted.internet import reactor

        pool = ThreadPool(minthreads=1, maxthreads=1, name="test-auth")
        pool.start()
        self.addCleanup(pool.stop)
        threads: list[int] = []
        original = auth._check

        def recording(*args: Any) -> bool:
            threads.append(threading.get_ident())
            return original(*args)

        self.patch(auth, "_check", recording)
        authenticator = HtpasswdAuthenticator(
            self.writeFile("users", HTPASSWD), reactor=reactor, threadPool=pool
        )
        d = authenticator.authenticate(basicCredentials("bob", "s3cret"))

        def checked(user: str | None) -> None:
            self.assertEqual(user, "bob")
            self.assertEqual(len(threads), 1)
            self.assertNotEqual(threads[0], threading.get_ident())

        return d.addCallback(checked)
