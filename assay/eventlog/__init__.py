"""TCG PC Client event logs: parse (unverified), replay, and verify against a quote.

``parse_event_log`` turns untrusted bytes into an EventLog; ``replay`` computes PCR values from it;
``verify_log`` checks those against a ``VerifiedQuote`` and yields a VerifiedBootLog, what golden
policy judges a node by. ``assume_quoted_for_review`` yields a ReviewedBootLog instead: a file's own
replay taken as quoted, for offline review, proving nothing about a node.
"""

from ._caches import ContentCache, LogCaches
from ._coverage import GRUB_PREFIXES
from ._parse import (
    MAX_LOG_SIZE,
    TRAILER_PCR,
    Event,
    EventLog,
    SpecId,
    SpecIdAlgorithm,
    Undecodable,
    parse_event_log,
)
from ._replay import (
    BootLog,
    Replay,
    ReviewedBootLog,
    VerifiedBootLog,
    assume_quoted_for_review,
    initial_value,
    measured_events,
    replay,
    start_locality,
    verify_log,
)
from ._workarounds import WORKAROUNDS, AppliedWorkaround, Workaround

__all__ = [
    "GRUB_PREFIXES",
    "MAX_LOG_SIZE",
    "TRAILER_PCR",
    "WORKAROUNDS",
    "AppliedWorkaround",
    "BootLog",
    "ContentCache",
    "Event",
    "EventLog",
    "LogCaches",
    "Replay",
    "ReviewedBootLog",
    "SpecId",
    "SpecIdAlgorithm",
    "Undecodable",
    "VerifiedBootLog",
    "Workaround",
    "assume_quoted_for_review",
    "initial_value",
    "measured_events",
    "parse_event_log",
    "replay",
    "start_locality",
    "verify_log",
]
