"""
RFC 9110 section 5 field lines and RFC 9112 section 5 field syntax, for both directions.

A header block is the bytes between the start line and the empty line, each field line ending
in CRLF.  L{parseFields} reads the lines against the grammar in one regular-expression pass
(the common case) into C{(name, value)} pairs of raw bytes, names as sent, values without
surrounding whitespace.  What the grammar forbids is never passed on:

  - a field name that is not a token, or whitespace before the colon: an error;
  - CR, LF, NUL or any other control byte (but HTAB) inside a value (RFC 9110 section 5.5):
    an error for requests (the client gets a 400), or each replaced by SP for responses
    (the RFC's other choice, so that one bad field of an origin costs the field, not the
    page);
  - a line folded onto the next (obs-fold, RFC 9112 section 5.2): an error for requests,
    joined with SP for responses.

Line endings are CRLF only: a bare LF or CR is never a line break, so a value that carries
one cannot smuggle in a field of its own (C{X-A: foo<LF>Set-Cookie: ...}).
"""

from __future__ import annotations

import re

Headers = list[tuple[bytes, bytes]]

#: A field line, matched from a line's start: token, colon, optional whitespace, a value of
#: visible bytes and inner whitespace, CRLF.  The quantifiers are possessive (nothing is
#: given back), so a line costs one pass.  A line with whitespace before its CRLF does not
#: match (the look-behind), and is read line by line.  Each line start gives at most one
#: match and a valid line exactly one: a block whose matches are as many as its lines is
#: valid, and read in that single pass.
_FIELD_LINE = re.compile(
    rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]++):[ \t]*+([\t\x20-\x7e\x80-\xff]*+)(?<![ \t])\r\n",
    re.MULTILINE,
)

#: Bytes that may not appear in a field value (all controls but HTAB, and DEL).
UNSAFE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class FieldError(ValueError):
    """
    A header block that breaks the field grammar; the message says how, for a person.
    """


def parseFields(block: bytes, lenient: bool = False) -> Headers:
    """
    The field lines of C{block} (each ending in CRLF, no final empty line) as raw pairs.

    @param lenient: a response's block: control bytes in values become SP and folded lines
        are joined, instead of being errors.
    @raise FieldError: the block breaks the grammar (in a way C{lenient} does not mend).
    """
    fields = quickFields(block)
    if fields is not None:
        return fields
    if not block:
        return []
    return _parseSlowly(block, lenient)


def quickFields(block: bytes) -> Headers | None:
    """
    The fields of C{block} if every line of it is a well-formed field line without
    whitespace before its CRLF (nearly every block), read in one pass; else None (and
    L{parseFields} says what is wrong, or mends it).  A block read so has no CR or LF but
    its line ends.
    """
    fields = _FIELD_LINE.findall(block)
    if len(fields) == block.count(b"\n") and block[-2:] == b"\r\n":
        return fields
    return None


def _parseSlowly(block: bytes, lenient: bool) -> Headers:
    """
    L{parseFields} for a block the fast grammar did not match: say what is wrong, or (for
    responses) mend what the RFC lets a recipient mend.
    """
    if not block.endswith(b"\r\n"):
        raise FieldError("a field line does not end in CRLF")
    fields: Headers = []
    for line in block[:-2].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not lenient or not fields:
                raise FieldError("a folded field line (obsolete line folding)")
            name, value = fields[-1]
            fields[-1] = (name, _value(value + b" " + line.strip(b" \t"), lenient))
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise FieldError(f"a field line without a colon: {_show(line)}")
        if _TOKEN.fullmatch(name) is None:
            raise FieldError(f"a malformed field name: {_show(name)}")
        fields.append((name, _value(value.strip(b" \t"), lenient)))
    return fields


def _value(value: bytes, lenient: bool) -> bytes:
    if UNSAFE.search(value) is None:
        return value
    if not lenient:
        raise FieldError("a control character (CR, LF, NUL ...) inside a field value")
    return UNSAFE.sub(b" ", value).strip(b" \t")


def _show(text: bytes, limit: int = 40) -> str:
    shown = repr(text[:limit])[1:]
    return shown + ("..." if len(text) > limit else "")


def tokens(values: list[bytes]) -> list[bytes]:
    """
    The lower-case list elements of comma-separated field values (C{Connection: a, B}).
    """
    out: list[bytes] = []
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t").lower()
            if item:
                out.append(item)
    return out


def framingFields(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[bytes], list[bytes], list[bytes], int]:
    """
    The values of the fields that frame a message, found in one pass (names compared by
    length first: most fields are none of these): C{Content-Length}, C{Transfer-Encoding}
    and C{Connection}, and how many C{Host} fields there are.
    """
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: list[bytes] = []
    hosts = 0
    for name, value in headers:
        size = len(name)
        if size == 4:
            if name.lower() == b"host":
                hosts += 1
        elif size == 10:
            if name.lower() == b"connection":
                connection.append(value)
        elif size == 14:
            if name.lower() == b"content-length":
                lengths.append(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            codings.append(value)
    return lengths, codings, connection, hosts
