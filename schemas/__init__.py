"""Data shapes only: the Debezium envelope, the platform's captured rows, their decoders. No I/O."""

from schemas.envelope import ChangeEvent, Heartbeat, Op, Record, Source, Tombstone, decode_message
from schemas.errors import CdcDecodeError
from schemas.values import UNAVAILABLE, TstzRange, Unavailable

__all__ = [
    "UNAVAILABLE",
    "CdcDecodeError",
    "ChangeEvent",
    "Heartbeat",
    "Op",
    "Record",
    "Source",
    "Tombstone",
    "TstzRange",
    "Unavailable",
    "decode_message",
]
