"""The C{caplab} plugin for C{twist} and C{twistd}: uppercase TCP/UDP services and a web proxy."""

from twisted.application.service import ServiceMaker

caplab = ServiceMaker(
    "caplab",
    "caplab.tap",
    "Uppercase TCP/UDP services and an HTTP forward proxy (networking-lab services).",
    "caplab",
)
