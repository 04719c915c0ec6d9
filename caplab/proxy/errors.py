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
        text = str(reason.value)
        if "certificate verify failed" in text or name == "VerificationError":
            detail = f"the TLS certificate of {target.authority} could not be verified ({text})"
        else:
            detail = f"TLS with {target.authority} failed ({text})"
        return UpstreamError(502, "Bad Gateway", detail)
    return None
