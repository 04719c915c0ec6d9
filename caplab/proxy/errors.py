"""
Why an origin could not be reached, as the L{UpstreamError} (502 or 504) the client sees.
"""

from __future__ import annotations

from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.error import (
    TimeoutError as ConnectTimeoutError,
)
from twisted.python.failure import Failure

from caplab.proxy.hooks import Target, UpstreamError


def describeConnectFailure(reason: Failure, target: Target) -> UpstreamError:
    """
    The L{UpstreamError} (502 or 504) for a failed connection attempt to C{target}.
    """
    where = target.authority
    if reason.check(UpstreamError):
        return reason.value  # type: ignore[return-value]
    if reason.check(DNSLookupError):
        return UpstreamError(502, "Bad Gateway", f"the host name {target.host} was not found")
    if reason.check(ConnectionRefusedError):
        return UpstreamError(502, "Bad Gateway", f"{where} refused the connection")
    if reason.check(ConnectTimeoutError):
        return UpstreamError(504, "Gateway Timeout", f"connecting to {where} timed out")
    if reason.check(ConnectError):
        return UpstreamError(
            502, "Bad Gateway", f"cannot connect to {where}: {reason.getErrorMessage()}"
        )
    return UpstreamError(502, "Bad Gateway", f"cannot connect to {where}: {reason.value}")


def tlsFailure(reason: Failure, target: Target) -> UpstreamError | None:
    """
    The 502 for a TLS handshake or certificate verification failure, if C{reason} is one.
    """
    name = type(reason.value).__name__
    module = type(reason.value).__module__
    if name == "VerificationError" or module.startswith("OpenSSL"):
        text = _openSSLReason(reason.value) if reason.value is not None else ""
        if "certificate verify failed" in text or name == "VerificationError":
            detail = f"the TLS certificate of {target.authority} could not be verified ({text})"
        else:
            detail = f"TLS with {target.authority} failed ({text})"
        return UpstreamError(502, "Bad Gateway", detail)
    return None


def _openSSLReason(error: BaseException) -> str:
    """
    What an OpenSSL error says, in words: C{[('SSL routines', '', 'wrong version number')]}
    becomes C{wrong version number}.
    """
    reasons = [
        entry[-1]
        for entry in (error.args[0] if error.args and isinstance(error.args[0], list) else [])
        if isinstance(entry, tuple) and entry and isinstance(entry[-1], str) and entry[-1]
    ]
    return "; ".join(reasons) if reasons else str(error)
