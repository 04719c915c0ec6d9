"""
The C{--help} of the policy and proxy options says what the code does: where C{--access-log -}
writes, which hashes C{--auth-file} accepts and in how many threads it checks them, and
where a parent proxy's password is better kept.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.auth import MAX_CHECK_THREADS
from caplab.tap import Options


def helpOf(option: str) -> str:
    """
    The C{--help} text of C{--option}, on one line.
    """
    lines = Options().getUsage(width=80).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(f"--{option}="))
    text = []
    for line in lines[start + 1 :]:
        if line.strip().startswith("-"):
            break
        text.append(line.strip())
    return " ".join(text)


class HelpTests(SynchronousTestCase):
    def test_accessLogDash(self) -> None:
        """
        C{--access-log -} goes into twist's log (as C{caplab.access} events), not straight to
        standard output.
        """
        text = helpOf("access-log")
        self.assertIn("'-': into twist's own log", text)
        self.assertNotIn("standard output", text)

    def test_authFileHashes(self) -> None:
        """
        C{--auth-file} names Apache MD5 among the accepted hashes, with its warning, and
        the rule of the check threads the code uses.
        """
        text = helpOf("auth-file")
        self.assertIn("Apache MD5 ($apr1$, htpasswd's default) is accepted with a warning", text)
        self.assertIn(f"(half the cores, 1 to {MAX_CHECK_THREADS})", text)

    def test_upstreamProxyPassword(self) -> None:
        """
        C{--upstream-proxy} warns that a password on the command line shows in C{ps} and
        points to C{--config}.
        """
        text = helpOf("upstream-proxy")
        self.assertIn("visible to every user of the machine (ps)", text)
        self.assertIn("--config file", text)
