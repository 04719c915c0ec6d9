"""
The htpasswd file format: one C{user:hash} a line, C{#} comments and blank lines ignored.

Accepted hashes: bcrypt (C{htpasswd -B}: C{$2y$}, C{$2b$}, C{$2a$}), SHA-crypt (C{htpasswd
-2}/C{-5}, C{mkpasswd -m sha-256}/C{sha-512}: C{$5$}, C{$6$}) and Apache MD5 (C{$apr1$}, what
C{htpasswd} writes by default: salted, but fast to guess, so L{PasswordHash.weak}).  Refused
when the file is read, so a weak or mistyped file never half-works: C{{SHA}} (unsalted
SHA-1), DES crypt (8 characters at most) and plain text.  The hashes are checked with the
bcrypt package and libpass (C{passlib}); pure functions besides reading the file.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import bcrypt
from passlib.hash import apr_md5_crypt, sha256_crypt, sha512_crypt

_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")

#: The rounds of a SHA-crypt hash that names them (C{$6$rounds=N$...}).
_ROUNDS = re.compile(r"\$[56]\$rounds=([0-9]+)\$")


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

    scheme: str  # "bcrypt", "sha256-crypt", "sha512-crypt" or "apr-md5"
    value: str

    @property
    def weak(self) -> bool:
        """
        Whether the scheme is one caplab accepts only because C{htpasswd} writes it.
        """
        return self.scheme == "apr-md5"

    @property
    def cost(self) -> tuple[str, int]:
        """
        What a check of this hash costs: the scheme and its cost parameter (bcrypt's log2
        cost, SHA-crypt's rounds, 5000 when not written; 1000 for Apache MD5, which has
        none).  Hashes of the same cost take as long to check.
        """
        if self.scheme == "bcrypt":
            return self.scheme, int(self.value[4:6])
        if self.scheme == "apr-md5":
            return self.scheme, 1000
        rounds = _ROUNDS.match(self.value)
        return self.scheme, int(rounds.group(1)) if rounds else 5000

    def __repr__(self) -> str:
        return f"PasswordHash({self.scheme!r}, ...)"

    def verify(self, password: bytes) -> bool:
        """
        Whether C{password} matches (slow: call it in a thread).
        """
        if self.scheme == "bcrypt":
            # Like Apache's htpasswd, only the first 72 bytes count for bcrypt.
            return bcrypt.checkpw(password[:72], self.value.encode("ascii"))
        return bool(_HANDLERS[self.scheme].verify(password, self.value))


def parseHash(text: str) -> PasswordHash:
    """
    The L{PasswordHash} that C{text} stores.

    @raise ValueError: a scheme caplab does not accept, or a malformed hash.
    """
    if text.startswith("$2"):
        if not _BCRYPT.fullmatch(text):
            raise ValueError("malformed bcrypt hash")
        return PasswordHash("bcrypt", text)
    for prefix, scheme in (("$5$", "sha256-crypt"), ("$6$", "sha512-crypt"), ("$apr1$", "apr-md5")):
        if text.startswith(prefix):
            try:
                with warnings.catch_warnings():
                    # passlib warns (and clamps) where glibc would too, e.g. rounds=10.
                    warnings.simplefilter("error")
                    parsed = _HANDLERS[scheme].from_string(text)
            except (ValueError, Warning):
                parsed = None
            if parsed is None or not parsed.checksum:
                raise ValueError(f"malformed {scheme} hash")
            return PasswordHash(scheme, text)
    if text.startswith("{SHA}"):
        raise ValueError("{SHA} hashes (unsalted SHA-1) are too weak: use htpasswd -B (bcrypt)")
    raise ValueError(
        "unsupported hash: use bcrypt (htpasswd -B), SHA-crypt ($5$, $6$) or, weaker, "
        "Apache MD5 ($apr1$)"
    )


#: The passlib handler of each scheme but bcrypt (checked with the bcrypt package).
_HANDLERS: dict[str, Any] = {
    "sha256-crypt": sha256_crypt,
    "sha512-crypt": sha512_crypt,
    "apr-md5": apr_md5_crypt,
}


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
    The users in the htpasswd file at C{path}, UTF-8 text (a byte order mark at its start,
    which Windows editors write, is not part of the first user's name).

    @raise AuthFileError: unreadable, or see L{parseHtpasswd}.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            return parseHtpasswd(f, path)
    except OSError as e:
        raise AuthFileError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise AuthFileError(f"{path}: not UTF-8 text ({e.reason})") from None
