"""Ingest: session discovery, manifest validation, audio decoding and transcript loading.

* :mod:`atrisk.ingest.manifest` reads ``recordings/sessions.csv`` into
  :class:`~atrisk.records.Session` records and row errors.
* :mod:`atrisk.ingest.audio` decodes tracks to 16 kHz mono float32
  (:func:`load_audio`, :func:`decode_session`).

Importing this package does not import torch (the decoder loads on first use).
"""

from atrisk.ingest.audio import (
    AudioInfo,
    DecodedSession,
    audio_info,
    decode_session,
    is_silent,
    load_audio,
    peak,
)
from atrisk.ingest.manifest import (
    AUDIO_EXTENSIONS,
    describe_missing_track,
    iter_manifest,
    read_manifest,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "DecodedSession",
    "audio_info",
    "decode_session",
    "describe_missing_track",
    "is_silent",
    "iter_manifest",
    "load_audio",
    "peak",
    "read_manifest",
]
