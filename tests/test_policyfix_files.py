"""
Reading list and htpasswd files written by other tools: a UTF-8 byte order mark at the
start is not part of the first line.
"""

from __future__ import annotations

import codecs

from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.auth import HtpasswdAuthenticator, basicCredentials
from caplab.proxy.htpasswd import loadHtpasswd
from caplab.proxy.policy import HostPolicy
from tests.test_auth import BCRYPT, SHA256, FakeReactor, FakeThreadPool
from tests.test_policy import TempFiles

BOM = codecs.BOM_UTF8


class ByteOrderMarkTests(TempFiles, SynchronousTestCase):
    """
    A UTF-8 byte order mark (as Notepad writes) at the start of a file is not part of its
    first line.
    """

    def test_listFirstLine(self) -> None:
        """
        The first line of a list with a byte order mark is read as without one: a comment, a
        hosts-file line, a network.
        """
        for first, host in [
            ("# ads", "ads.example"),
            ("0.0.0.0 ads.example", "ads.example"),
            ("10.0.0.0/8", "10.1.2.3"),
            ("ads.example", "ads.example"),
        ]:
            path = self.writeFile("list.txt", BOM + f"{first}\nads.example\n".encode())
            policy = HostPolicy.fromFiles([path], [])
            self.assertIsNotNone(policy.check(host), first)
            self.assertEqual(policy.blocked.files[0].rules, 1 if first == "# ads" else 2)

    def test_htpasswdFirstUser(self) -> None:
        """
        The first user of an htpasswd file with a byte order mark is named as written, and
        logs in.
        """
        path = self.writeFile("users", BOM + f"alice:{BCRYPT}\nbob:{SHA256}\n".encode())
        self.assertEqual(sorted(loadHtpasswd(path)), ["alice", "bob"])
        pool = FakeThreadPool()
        authenticator = HtpasswdAuthenticator(
            path,
            reactor=FakeReactor(),
            threadPool=pool,  # type: ignore[arg-type]
        )
        d = authenticator.authenticate(basicCredentials("alice", "s3cret"))
        pool.runAll()
        self.assertEqual(self.successResultOf(d), "alice")

    def test_htpasswdComment(self) -> None:
        """
        A comment on the first line of an htpasswd file with a byte order mark is a comment.
        """
        path = self.writeFile("users", BOM + f"# users\nalice:{BCRYPT}\n".encode())
        self.assertEqual(list(loadHtpasswd(path)), ["alice"])
