"""Prosodic features: openSMILE eGeMAPSv02 (default) or ComParE_2016, via ``opensmile.Smile``.

:class:`OpenSmileProsody` wraps :class:`opensmile.Smile` (created once per instance and
feature level, lazily, and not pickled, so the extractor can be sent to process pools) in
the audinterface style: ``process_signal``, ``process_file``, ``process_files``,
``process_sessions``, plus ``process_segments``/``process_utterances`` (functionals per
utterance, indexed ``(session_id, speaker, start_s, end_s)``) and ``process_signal_lld``
(low-level descriptors, one row per 10 ms frame).  Column names are openSMILE's own
(``loudness_sma3_amean``, ``F0semitoneFrom27.5Hz_sma3nz_amean``, ...).

Long tracks: the signal is fed to **one** openSMILE instance in chunks of
``chunk_s`` seconds through openSMILE's external audio source, whose wave level is a
ring buffer (two chunks) instead of openSMILE's default growing buffer, while
``smile.run()`` consumes it in a second thread.  openSMILE therefore sees the same
sample stream as with whole-file processing and its functionals are computed over the
whole track: the results are bit-identical to :meth:`opensmile.Smile.process_signal`
(tested), and the memory openSMILE needs no longer includes copies of the whole wave
(see ``docs/prosody.md`` for the numbers).  This uses opensmile-python's private
``Smile._options``/``Smile._smile`` helpers (the package is pinned to 2.6.0).
:meth:`OpenSmileProsody.process_stream` (what ``atrisk extract`` runs for tracks it
streams) goes further for eGeMAPSv02: openSMILE computes only the contours its
functionals read, with ring buffers, and the functionals are computed from those frames
(:mod:`atrisk.extractors.prosody.egemaps`), so openSMILE's memory no longer grows with the track.

Edge cases (``docs/prosody.md`` lists the outputs):

* Non-finite samples are set to 0; samples beyond [-1, 1) are clipped to the 16-bit
  range openSMILE reads (opensmile-python would wrap them around); multi-channel input
  ``(channels, samples)`` is averaged to mono.
* A segment too short to frame gives NaN (openSMILE's own behaviour); if openSMILE raises,
  every feature is NaN and a warning is logged (``process_sessions`` also lists the track
  and the reason in :attr:`OpenSmileProsody.failures`); a batch never stops for one track.
* eGeMAPSv02 only: openSMILE writes 0 (or -201 dB) for the voiced-only functionals
  (``*_sma3nz_*`` without ``UV``) of audio with no voiced frame, and 0 for the five
  unvoiced-only means when there is no unvoiced frame; these undefined values are NaN here.
* openSMILE is licensed for research and education only; :attr:`backend_name`
  is recorded with every feature table so the backend in use is always known; see
  :func:`make_prosody_extractor` for the ``torch`` backend.

Example:
    >>> ex = OpenSmileProsody()  # doctest: +SKIP
    >>> ex.process_file("recordings/s1/teacher.wav")["loudness_sma3_amean"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import opensmile
import pandas as pd
from opensmile.core.config import config as smile_config
from opensmile.core.lib import SMILE_RUNNING, smileapi

from atrisk.config import ProsodyConfig
from atrisk.errors import AudioDecodeError, ConfigError
from atrisk.extractors.prosody.base import SESSION_INDEX, Extracted, ProsodyBackend
from atrisk.ingest.audio import (
    DecodedSession,
    load_audio,
    mono_finite,
    stream_audio,
)
from atrisk.records import TRACKS

log = logging.getLogger(__name__)

#: Index names of the frames of :meth:`OpenSmileProsody.process_signal_lld`.
FRAME_INDEX = ["start_s", "end_s"]

_LEVELS = {
    "functionals": opensmile.FeatureLevel.Functionals,
    "lld": opensmile.FeatureLevel.LowLevelDescriptors,
}

# opensmile-python's standard external wave input with a ring buffer instead of a
# growing one (``growDyn=1, isRb=0`` keeps every sample of the track in openSMILE).
_RING_SOURCE = """[componentInstances:cComponentManager]
instance[{name}].type=cExternalAudioSource

[{name}:cExternalAudioSource]
writer.dmLevel=wave
writer.levelconf.growDyn=0
writer.levelconf.isRb=1
writer.levelconf.nT={ring}
sampleRate=\\cm[sampleRate{{16000}}:sample rate]
nBits=\\cm[nBits{{16}}:sample bits]
channels=\\cm[channels{{1}}:channel size]
"""

# The levels the functionals read (``bufferModeConf`` of the shipped GeMAPS/eGeMAPS/ComParE
# configs: ``BufferMode.conf.inc``, ``growDyn=1, isRb=0, nT=1000``) hold every 10 ms frame
# of the track, each with two 64-byte time-meta records.  Growing from 1000 frames they
# double, so a 3 h track (1.08 M frames) ends in buffers for 2.05 M frames and briefly
# holds both the old and the new buffers; sized from the duration they are allocated
# once.  The buffer size does not change any value (tested bit-identical).
_BUFFER_MODE = """writer.levelconf.growDyn = 1
writer.levelconf.isRb = 0
writer.levelconf.nT = {frames}
"""
#: Frames per second of the levels sized by :data:`_BUFFER_MODE` (10 ms hop).
_LLD_RATE = 100
#: ``nT`` of the shipped ``BufferMode.conf.inc``.
_SHIPPED_NT = 1000
#: Extra frames over the duration (the last frames, rounding); more still grow.
_FRAME_MARGIN = 1000

# Components of the shipped eGeMAPSv02 config whose output no eGeMAPSv02 functional reads:
# GeMAPSv01b's smoothed LLD sets and its two functionals of them, superseded by
# eGeMAPSv02's own (``funcconcat`` takes none of their levels).  Three of those smoothed
# sets are whole-track levels; without them the functionals of a 3 h track need about a
# quarter less memory, and the values are bit-identical (tested).
_EGEMAPS_UNUSED = ("smoFnz", "smoE", "smoNoF0andLoudnNz", "smoSpectralZ", "smoSpectralNz",
                   "functionalsMeanSpectralUV", "functionalsMVRVoiced")
_GEMAPS_INCLUDES = ("GeMAPSv01b_core.lld.conf.inc", "GeMAPSv01b_core.func.conf.inc")
_EGEMAPS_INCLUDES = tuple(f"gemaps/v01b/{n}" for n in _GEMAPS_INCLUDES) + (
    "egemaps/v02/eGeMAPSv02_core.lld.conf.inc", "egemaps/v02/eGeMAPSv02_core.func.conf.inc")

# The components of eGeMAPSv02 that compute functionals (cFunctionals, and the two that
# rename or convert their outputs), and the levels they read: the smoothed contours
# (``_sma3``/``_sma3nz``) and the frame energy.  openSMILE's own LLD output (``lld``:
# ``lldsetE_smo``/``lldsetF_smo``) is not enough: its formants are smoothed before the
# voicing mask (the functionals read ``formantsNz``, masked first), it has no
# voiced/unvoiced spectral contours (masked before smoothing) and no frame energy.
_EGEMAPS_FUNCTIONALS = (
    "gemapsv01b_temporalF0", "gemapsv01b_temporalF0p", "gemapsv01b_temporalLoudness",
    "gemapsv01b_temporalSetNames", "gemapsv01b_functionalsF0",
    "gemapsv01b_functionalsLoudness", "egemapsv02_leqLin", "egemapsv02_leq",
    "egemapsv02_functionalsMVR", "egemapsv02_functionalsMeanUV",
    "egemapsv02_functionalsMVRVoiced")
_FUNCTIONAL_INPUTS = (
    "gemapsv01b_lld_single_logF0_smo", "gemapsv01b_loudness_smo",
    "egemapsv02_lldSetNoF0AndLoudnessZ_smo", "egemapsv02_lldSetNoF0AndLoudnessNz_smo",
    "egemapsv02_lldSetSpectralNz_smo", "egemapsv02_lldSetSpectralZ_smo",
    "egemapsv02_energyRMS")
#: One ``cExternalSink`` per level of :data:`_FUNCTIONAL_INPUTS`, each put in the place
#: (component order) of the first functionals component reading that level.  The levels
#: do not have the same number of frames (``jfk.flac``, 11 s: 1,099 frames of the 20 ms
#: levels, loudness etc., 1,094 of the 60 ms ones, F0 etc.), so they cannot be joined
#: frame by frame.  openSMILE's full-input functionals read their level once, in the
#: first end-of-input tick that runs components, so frames written to it in later ticks
#: (the ``sma3`` smoothers write one frame per tick: the Viterbi pitch smoother's flushed
#: frames and each smoother's padded extra end frame) are never read; the frames kept
#: here are cut at the same point (:func:`_eoi_cuts`, see ``docs/prosody.md``).
_INPUT_SINKS = tuple(f"atrisk_sink{i}" for i in range(len(_FUNCTIONAL_INPUTS)))
#: Functionals component whose place each sink of :data:`_INPUT_SINKS` takes.
_SINK_PLACES = ("gemapsv01b_temporalF0", "gemapsv01b_temporalLoudness",
                "egemapsv02_functionalsMVR", "egemapsv02_functionalsMVRVoiced",
                "egemapsv02_functionalsMVRVoiced", "egemapsv02_functionalsMeanUV",
                "egemapsv02_leqLin")
#: Frames per sink read (``cExternalSink`` ``blocksize``): one Python call per 100
#: frames.  In the first end-of-input tick a sink reads at most one block; each level has
#: then at most 100 unread frames (fewer than a block left before end of input, plus the
#: one frame its smoother writes in that tick), so that read ends where openSMILE's
#: functionals stop reading.
_SINK_BLOCK = 100
#: Marker sinks on the frame-energy level, placed before the sinks of
#: :data:`_INPUT_SINKS`, with pairwise coprime block sizes.  No frame is written to that
#: level after end of input, so a marker's only read shorter than its block size (a
#: read is cut short only in the end-of-input state) is its read in the first
#: end-of-input tick: it separates the sinks' reads before and in that tick.  A marker
#: has no such read when the level's frame count is a multiple of its block size; all
#: four only when it is a multiple of 97 x 99 x 101 x 103 frames (277 h of track).
_MARKER_BLOCKS = (97, 99, 101, 103)
_MARKER_SINKS = tuple(f"atrisk_marker{i}" for i in range(len(_MARKER_BLOCKS)))
_MARKER_LEVEL = "egemapsv02_energyRMS"
_INPUTS_CONF = """; generated by atrisk: eGeMAPSv02 up to the inputs of its functionals
[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
printLevelStats=0

\\{\\cm[source{?}:include external source]}
\\{../../gemaps/v01b/GeMAPSv01b_core.lld.conf.inc}
\\{eGeMAPSv02_core.lld.conf.inc}
\\{../../gemaps/v01b/GeMAPSv01b_core.func.conf.inc}
\\{eGeMAPSv02_core.func.conf.inc}
\\{\\cm[sink{?}:include external sink]}
""" + "".join(
    f"\n[{k}:cExternalSink]\nreader.dmLevel = {lv}\nblocksize = {_SINK_BLOCK}\n"
    for k, lv in zip(_INPUT_SINKS, _FUNCTIONAL_INPUTS, strict=True)) + "".join(
    f"\n[{k}:cExternalSink]\nreader.dmLevel = {_MARKER_LEVEL}\nblocksize = {b}\n"
    for k, b in zip(_MARKER_SINKS, _MARKER_BLOCKS, strict=True))

#: Ring-buffer include of the shipped configs (1500 frames) used for the functionals'
#: input levels when they are streamed (:data:`_FUNCTIONAL_INPUTS`).
_RING_MODE = "shared/BufferModeRbLag.conf.inc"

_F0 = "F0semitoneFrom27.5Hz_sma3nz_amean"
_UV_MEANS = ("alphaRatioUV_sma3nz_amean", "hammarbergIndexUV_sma3nz_amean",
             "slopeUV0-500_sma3nz_amean", "slopeUV500-1500_sma3nz_amean",
             "spectralFluxUV_sma3nz_amean")


def _ring_source(ring: int) -> str:
    """Path of an openSMILE source config with a ``ring``-sample wave ring buffer."""
    path = _cache_folder() / f"ring_source_{ring}.conf"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_RING_SOURCE.format(name=smile_config.EXTERNAL_SOURCE_COMPONENT,
                                           ring=ring))
        os.replace(tmp, path)
    return str(path)


def _cache_folder() -> Path:
    folder = Path(tempfile.gettempdir()) / f"atrisk-opensmile-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _pruned_egemaps() -> str | None:
    """Path of eGeMAPSv02.conf without :data:`_EGEMAPS_UNUSED` (``None``: not possible).

    Generated at run time from the installed opensmile package (its config tree is
    copied to a per-user cache folder and the seven ``instance[...]`` lines are
    dropped); nothing of openSMILE's configs is kept in this repository.  When the
    installed configs do not contain exactly those lines, the shipped config is used.
    """
    return _generated_egemaps(tuple(f"gemapsv01b_{c}" for c in _EGEMAPS_UNUSED))


def _functional_inputs_egemaps() -> str | None:
    """Path of a config computing what eGeMAPSv02's functionals read, frame by frame.

    The pruned eGeMAPSv02 chain (:func:`_pruned_egemaps`) without its functionals
    components (:data:`_EGEMAPS_FUNCTIONALS`); each level they read
    (:data:`_FUNCTIONAL_INPUTS`) has a sink (:data:`_INPUT_SINKS`) in the place of the
    first of them reading it, and the end-of-input marker sinks (:data:`_MARKER_SINKS`)
    come before those.  With ring buffers for those levels openSMILE's memory no
    longer grows with the track; the functionals are then computed from the frames
    (:func:`atrisk.extractors.prosody.egemaps.opensmile_functionals`).  ``None`` when the
    installed configs do not have exactly those components.
    """
    drop = tuple(f"gemapsv01b_{c}" for c in _EGEMAPS_UNUSED) + _EGEMAPS_FUNCTIONALS
    places: dict[str, list[str]] = {
        _SINK_PLACES[0]: [f"instance[{m}].type=cExternalSink\n" for m in _MARKER_SINKS]}
    for sink, place in zip(_INPUT_SINKS, _SINK_PLACES, strict=True):
        places.setdefault(place, []).append(f"instance[{sink}].type=cExternalSink\n")
    return _generated_egemaps(drop, _INPUTS_CONF, places)


def _generated_egemaps(drop: tuple[str, ...], top: str | None = None,
                       places: dict[str, list[str]] | None = None) -> str | None:
    """Path of a generated copy of the eGeMAPSv02 config tree without ``drop``.

    The installed package's config tree is copied to the per-user cache folder and the
    ``instance[<name>]`` lines of the components ``drop`` are removed from the four
    eGeMAPSv02/GeMAPSv01b include files (``places``: the lines given for a dropped
    component take its place, so the new components tick in its turn); with ``top`` the
    returned file is that text, written next to ``eGeMAPSv02.conf``, else
    ``eGeMAPSv02.conf`` itself.  The folder is keyed by what is dropped and added (a
    changed list never reuses an old copy).

    Returns:
        The config path, or ``None`` (a warning is logged) when not exactly one line per
        dropped component was found.
    """
    places = places or {}
    key = hashlib.sha1((" ".join(drop) + (top or "") + repr(sorted(places.items()))
                        ).encode()).hexdigest()[:8]
    folder = _cache_folder() / f"config-{opensmile.__version__}-{key}"
    conf = folder / "egemaps" / "v02" / ("atrisk_generated.conf" if top else "eGeMAPSv02.conf")
    if conf.is_file():
        return str(conf)
    src = Path(opensmile.__file__).parent / "core" / "config"
    work = Path(tempfile.mkdtemp(dir=_cache_folder()))
    try:
        shutil.copytree(src, work / "config")
        dropped = 0
        for name in _EGEMAPS_INCLUDES:
            path = work / "config" / name
            lines = path.read_text().splitlines(keepends=True)
            keep = []
            for ln in lines:
                gone = [c for c in drop if ln.startswith(f"instance[{c}].")]
                dropped += bool(gone)
                keep += places.get(gone[0], []) if gone else [ln]
            path.write_text("".join(keep))
        if dropped != len(drop):
            log.warning("unexpected openSMILE configs (%d of %d components found); "
                        "using the shipped eGeMAPSv02 config", dropped, len(drop))
            return None
        if top:
            (work / "config" / "egemaps" / "v02" / conf.name).write_text(top)
        try:
            os.replace(work / "config", folder)
        except OSError:  # another process made it first
            pass
        return str(conf) if conf.is_file() else None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _buffer_mode(frames: int) -> str:
    """Path of an openSMILE ``bufferModeConf`` include sized for ``frames`` frames.

    Generated at run time (3 lines, nothing of the shipped configs is copied) into the
    same per-user cache folder as :func:`_ring_source`.
    """
    path = _cache_folder() / f"buffer_mode_{frames}.conf.inc"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_BUFFER_MODE.format(frames=frames))
        os.replace(tmp, path)
    return str(path)


def _frames_for(seconds: float | None) -> int | None:
    """Frames to allocate up front for ``seconds`` of audio (``None``: unknown/short)."""
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    if seconds * _LLD_RATE <= _SHIPPED_NT:  # fits the shipped buffer: nothing to gain
        return None
    frames = int(math.ceil(seconds * _LLD_RATE)) + _FRAME_MARGIN
    # whole multiples of the margin, so tracks of about one length share one file
    return -(-frames // _FRAME_MARGIN) * _FRAME_MARGIN


def _stream_file(path: Path, sample_rate: int, chunk: int) -> Iterator[np.ndarray]:
    """Yield ``chunk``-sample pieces of ``path`` (:func:`~atrisk.ingest.audio.stream_audio`).

    Raises:
        AudioDecodeError: When the file is missing, empty, undecodable or has 0 samples.
    """
    return stream_audio(path, sample_rate, chunk)


def _split(pieces: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    """Yield ``pieces`` cut into views of at most ``chunk`` samples (the ring holds two)."""
    for piece in pieces:
        for i in range(0, piece.size, chunk):
            yield piece[i:i + chunk]


def _stop(api: Any, source: str) -> None:
    """End the run of ``api`` after its producer failed, whatever state its thread is in.

    The consumer thread may not have reached ``run()`` yet (on a loaded machine it can
    be scheduled long after ``start()``): openSMILE is then still *initialized*, where
    ``abort()`` fails ("must be in the running state for aborting") and a later
    ``run()`` would wait for samples forever.  End of input is therefore set first, so
    any run ends on the samples already written; ``abort()`` is only requested in the
    running state (it is also valid once the run has ended).  Never raises, so the
    producer's own error is the one that propagates.
    """
    try:
        api.external_audio_source_set_eoi(source)
        if smileapi.smile_get_state(api._smileobj) == SMILE_RUNNING:  # private, 2.6.0
            api.abort()
    except Exception as exc:  # keep the original error
        log.warning("could not stop openSMILE after an error (%s)", exc)


def _to_pcm16(x: np.ndarray) -> bytes:
    """Convert float samples to the 16-bit PCM opensmile-python feeds openSMILE.

    Same arithmetic as ``opensmile.Smile`` (``x * 32768`` truncated to int16) for samples
    in [-1, 1); samples outside are clipped instead of wrapping around.
    """
    y = np.clip(x, np.float32(-1.0), np.float32(32767 / 32768)) * np.float32(32768)
    return y.astype(np.int16).tobytes()


class _FrameStore:
    """Sink callback keeping the frames of one openSMILE level in float32 blocks.

    openSMILE computes in float32, so the frames are kept exactly at 4 bytes a value
    (no Python object per frame); blocks of :attr:`BLOCK` frames are added as needed.
    With a ``clock`` (shared by the sinks of one run) each read is also logged as
    ``(tick of the clock, frames read, frames after it)`` in :attr:`reads`.
    """

    BLOCK = 1 << 16

    def __init__(self, clock: Iterator[int] | None = None) -> None:
        self.blocks: list[np.ndarray] = []
        self.used = 0  # frames in the last block
        self.clock = clock
        self.reads: list[tuple[int, int, int]] = []

    def __call__(self, data: np.ndarray, meta: Any) -> None:
        rows = data.reshape(data.shape[0], -1)
        if self.clock is not None:
            self.reads.append((next(self.clock), len(rows), self.frames + len(rows)))
        done = 0
        while done < len(rows):
            if not self.blocks or self.used == self.BLOCK:
                self.blocks.append(np.empty((self.BLOCK, rows.shape[1]), np.float32))
                self.used = 0
            take = min(len(rows) - done, self.BLOCK - self.used)
            self.blocks[-1][self.used:self.used + take] = rows[done:done + take]
            self.used += take
            done += take

    @property
    def frames(self) -> int:
        """Frames received."""
        return (len(self.blocks) - 1) * self.BLOCK + self.used if self.blocks else 0

    def array(self) -> np.ndarray:
        """All frames, ``(frames, values)`` float32 (the blocks are released)."""
        if not self.blocks:
            return np.empty((0, 0), np.float32)
        self.blocks[-1] = self.blocks[-1][:self.used]
        out = self.blocks[0] if len(self.blocks) == 1 else np.concatenate(self.blocks)
        self.blocks = []
        return out


class _Marker:
    """Sink callback logging the reads of a marker sink (:data:`_MARKER_SINKS`)."""

    def __init__(self, clock: Iterator[int]) -> None:
        self.clock = clock
        self.reads: list[tuple[int, int]] = []  # (tick of the clock, frames read)

    def __call__(self, data: np.ndarray, meta: Any) -> None:
        self.reads.append((next(self.clock), int(data.shape[0])))


def _eoi_cuts(stores: Sequence[_FrameStore], markers: Sequence[_Marker],
              blocks: Sequence[int]) -> list[int]:
    """Frames of each level that openSMILE's full-input functionals read.

    openSMILE (3.x) ends a run in end-of-input (EOI) ticks: ``cComponentManager::
    runSingleThreaded`` sets the EOI condition once a tick ran nothing, the next tick
    only puts every component in the EOI state (``cSmileComponent::tick`` returns
    without calling ``myTick``), and in the tick after it ``cFunctionals`` with
    ``frameMode = full`` (``cWinToVecProcessor::myTick`` ->
    ``cDataReader::getNextMatrix``, full-input branch, once: only while its read index
    is 0) reads every frame its level holds at its turn.  Frames written later (the
    Viterbi pitch smoother flushes its trellis in that tick, and the frames then pass
    the following components one per tick; each ``sma3`` smoother writes one padded
    frame past its input) are in the level but not in the functionals.

    The sinks of :data:`_INPUT_SINKS` sit in the functionals' turn and read blocks; in
    that tick each reads the rest of its level (at most a block: fewer than a block was
    left unread before end of input, and the level's writer, a ``sma3`` smoother or
    the energy, adds at most one frame per tick, see :data:`_SINK_BLOCK`), so its frames
    up to the end of that read are the functionals' frames.  The tick is found by the
    marker sinks, which come before them: the first read of a marker shorter than its
    block size.

    Args:
        stores: The sinks of :data:`_INPUT_SINKS`, run with the markers' clock.
        markers: The sinks of :data:`_MARKER_SINKS`.
        blocks: Block size of each marker.

    Returns:
        Frames to keep per store (all of a store that read nothing in or after that tick).

    Raises:
        RuntimeError: When no marker read a short block (the frame count of the energy
            level is a multiple of every marker's block size).
    """
    short = [tick for marker, block in zip(markers, blocks, strict=True)
             for tick, n in marker.reads if n < block]
    if not short:
        raise RuntimeError("openSMILE's end-of-input tick not found (no short marker read)")
    eoi = min(short)
    cuts = []
    for store in stores:
        after = [end for tick, _, end in store.reads if tick > eoi]
        cuts.append(after[0] if after else store.frames)
    return cuts


class OpenSmileProsody(ProsodyBackend):
    """openSMILE functionals (or low-level descriptors) per track, file or utterance.

    Args:
        config: Backend, feature set and feature level (defaults when ``None``); only
            ``backend="opensmile"`` is handled here (see
            :func:`atrisk.extractors.prosody.load_prosody`).
        sample_rate: Rate (Hz) files are decoded to by :meth:`process_file`; use the
            same rate as :class:`~atrisk.config.AudioConfig` so that file and session
            features agree.
        num_workers: Processes for :meth:`process_files`, :meth:`process_sessions` and
            :meth:`process_utterances` (1: in this process); results equal the serial ones.
        chunk_s: Seconds of audio written to openSMILE at a time (bounds the memory
            openSMILE uses for the wave; does not change the results).
        device: Accepted for the common backend signature; openSMILE runs on the CPU.

    Raises:
        ConfigError: When the configured backend or feature set is not openSMILE's.
        ValueError: When ``num_workers < 1`` or ``chunk_s <= 0``.
    """

    name = "opensmile"

    def __init__(self, config: ProsodyConfig | None = None, sample_rate: int = 16000,
                 num_workers: int = 1, chunk_s: float = 60.0, device: str | None = None):
        self.config = config or ProsodyConfig()
        self.sample_rate = int(sample_rate)
        if self.config.backend != "opensmile":
            raise ConfigError(
                f"OpenSmileProsody handles prosody.backend='opensmile', got {self.config.backend!r}"
            )
        if not hasattr(opensmile.FeatureSet, self.config.feature_set):
            raise ConfigError(f"unknown openSMILE feature set {self.config.feature_set!r}")
        if int(num_workers) < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not chunk_s > 0:
            raise ValueError(f"chunk_s must be > 0, got {chunk_s}")
        self.num_workers = int(num_workers)
        self.chunk_s = float(chunk_s)
        self._smiles: dict[str, opensmile.Smile] = {}

    # -- state -----------------------------------------------------------------------

    def _smile_for(self, level: str) -> opensmile.Smile:
        if level not in self._smiles:
            feature_set: Any = getattr(opensmile.FeatureSet, self.config.feature_set)
            feature_level: Any = _LEVELS.get(level)
            if level == "functionals" and self.config.feature_set == "eGeMAPSv02":
                feature_set = _pruned_egemaps() or feature_set  # same values, less memory
            elif level == "inputs":  # the functionals' inputs (eGeMAPSv02 only)
                # opensmile-python's own sink (no callback) reads F0; ours: _INPUT_SINKS
                feature_set, feature_level = _functional_inputs_egemaps(), _FUNCTIONAL_INPUTS[0]
                if feature_set is None:
                    raise RuntimeError("no eGeMAPSv02 functional-inputs config")
            self._smiles[level] = opensmile.Smile(feature_set=feature_set,
                                                  feature_level=feature_level)
        return self._smiles[level]

    @property
    def smile(self) -> opensmile.Smile:
        """The functionals :class:`opensmile.Smile` object (created on first use)."""
        return self._smile_for("functionals")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_smiles"] = {}  # recreated lazily in the worker
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (f"OpenSmileProsody(config={self.config!r}, sample_rate={self.sample_rate}, "
                f"num_workers={self.num_workers}, chunk_s={self.chunk_s})")

    @property
    def feature_names(self) -> list[str]:
        """Names of the functionals (88 for eGeMAPSv02, 6373 for ComParE_2016)."""
        return list(self.smile.feature_names)

    @property
    def lld_names(self) -> list[str]:
        """Names of the low-level descriptors (25 for eGeMAPSv02, 65 for ComParE_2016)."""
        return list(self._smile_for("lld").feature_names)

    @property
    def backend_name(self) -> str:
        """Backend id recorded with the table, e.g. ``opensmile-eGeMAPSv02-2.6.0``."""
        return f"opensmile-{self.config.feature_set}-{opensmile.__version__}"

    # -- core ------------------------------------------------------------------------

    def _chunk_samples(self, sample_rate: int) -> int:
        return max(1, int(round(self.chunk_s * sample_rate)))

    def _run(self, level: str, x: np.ndarray | Iterable[np.ndarray], sample_rate: int,
             duration_s: float | None = None, sinks: dict[str, Any] | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stream ``x`` (a signal or its chunks) through one openSMILE instance.

        ``duration_s`` (known for a signal, else e.g. from the file header) sizes the
        whole-track levels of the functionals once (:data:`_BUFFER_MODE`); a wrong
        value only costs memory (they still grow), never changes the results.
        ``level="inputs"`` runs :func:`_functional_inputs_egemaps` with ring buffers
        (constant memory in openSMILE) and hands each sink's frames to ``sinks``
        (``{sink component: callback(frames, meta)}``).

        Returns:
            ``(features, frame starts, frame ends)`` of the standard sink (empty for
            ``sinks``).
        """
        smile = self._smile_for(level)
        try:
            smile.config_path  # noqa: B018 (raises when the file is gone)
        except FileNotFoundError:  # generated config removed (tmp cleaner): make it again
            del self._smiles[level]
            smile = self._smile_for(level)
        chunk = self._chunk_samples(sample_rate)
        pieces = _split([x] if isinstance(x, np.ndarray) else x, chunk)  # views, no copies
        options = smile._options()  # private opensmile-python 2.6.0 helpers (pinned)
        options["source"] = _ring_source(2 * chunk)
        options["sampleRate"] = int(sample_rate)
        options["nBits"] = 16
        if isinstance(x, np.ndarray):
            duration_s = x.size / sample_rate
        frames = _frames_for(duration_s) if level == "functionals" else None
        if frames is not None:
            options["bufferModeConf"] = _buffer_mode(frames)
        if level == "inputs":  # ring buffers instead of whole-track levels
            options["bufferModeConf"] = str(Path(smile.default_config_root) / _RING_MODE)
            options["blockSize"] = _SINK_BLOCK
        api = smile._smile(options=options)
        rows: list[np.ndarray] = []
        starts: list[float] = []
        ends: list[float] = []
        for name, callback in (sinks or {smile_config.EXTERNAL_OUTPUT_COMPONENT: (
                opensmile.Smile._sink_callback(rows, starts, ends))}).items():
            api.external_sink_set_callback_ex(name, callback)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                api.run()
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)

        thread: threading.Thread | None = None
        source = smile_config.EXTERNAL_SOURCE_COMPONENT
        try:
            for piece in pieces:
                data = _to_pcm16(piece)
                while not api.external_audio_source_write_data(source, data):
                    if thread is None:  # ring buffer full: start consuming
                        consumer = threading.Thread(target=run, daemon=True)
                        consumer.start()
                        thread = consumer  # only a started thread is stopped and joined
                    elif not thread.is_alive():  # run() failed (a starved run waits: tested)
                        raise (failure.pop() if failure else
                               RuntimeError("openSMILE stopped before the end of the signal"))
                    time.sleep(0.005)  # openSMILE needs ~1 s per minute of audio
            api.external_audio_source_set_eoi(source)
            if thread is None:  # everything fitted: run here, as opensmile.Smile does
                run()
        except BaseException:
            if thread is not None:
                _stop(api, source)  # never raises: this error is the one reported
            raise
        finally:
            if thread is not None:
                thread.join()
            api.free()
        if failure:
            raise failure[0]
        width = len(smile.feature_names)
        data = np.vstack(rows).astype("float64") if rows else np.empty((0, width))
        return data, np.asarray(starts, dtype="float64"), np.asarray(ends, dtype="float64")

    def _undefined_to_nan(self, values: np.ndarray, names: list[str]) -> np.ndarray:
        if self.config.feature_set != "eGeMAPSv02" or not values.size:
            return values
        pos = {n: i for i, n in enumerate(names)}
        if values[pos[_F0]] == 0.0:  # no voiced frame: voiced-only functionals undefined
            voiced = [i for n, i in pos.items() if "sma3nz" in n and "UV" not in n]
            values[voiced] = math.nan
        uv = [pos[n] for n in _UV_MEANS]
        if np.all(values[uv] == 0.0):  # no unvoiced frame
            values[uv] = math.nan
        return values

    # -- processing ------------------------------------------------------------------

    def functionals(self, signals: Sequence[np.ndarray], sample_rate: int
                    ) -> tuple[np.ndarray, list[str | None]]:
        """Return the functionals of each signal (one openSMILE run each) and the failures.

        Signals are processed in :attr:`num_workers` processes; a signal openSMILE fails
        on gets a NaN row and its reason, and a batch never stops for one signal.

        Args:
            signals: Whole tracks or cuts of any length, 1-D or ``(channels, samples)``.
            sample_rate: Their rate (Hz).

        Returns:
            ``(rows, reasons)`` as :meth:`ProsodyBackend.functionals`.

        Raises:
            ValueError: When ``sample_rate`` is below 1000 Hz (openSMILE aborts the whole
                process on such rates instead of raising) or a signal has more than 2 axes.
        """
        outcomes = self._map(self._functionals_job, [(None, x, sample_rate) for x in signals])
        if not outcomes:
            return np.empty((0, len(self.feature_names))), []
        rows = np.vstack([series.to_numpy(dtype="float64") for series, _ in outcomes])
        return rows, [reason for _, reason in outcomes]

    def _functionals(self, signal: np.ndarray, sample_rate: int
                     ) -> tuple[pd.Series, str | None]:
        """Return :meth:`process_signal`'s result and why openSMILE failed (``None``: ok)."""
        signal = mono_finite(signal, sample_rate)
        return self._functionals_of([signal], sample_rate, signal.size / sample_rate)

    def _functionals_of(self, pieces: Iterable[np.ndarray], sample_rate: int,
                        duration_s: float | None = None, bounded: bool = False
                        ) -> tuple[pd.Series, str | None]:
        """Functionals of the signal made of ``pieces`` (mono, finite) and openSMILE's failure.

        ``duration_s`` (when known) sizes openSMILE's whole-track buffers (see :meth:`_run`);
        ``bounded`` computes eGeMAPSv02's functionals from the streamed frames
        (:meth:`_bounded_functionals`).

        Raises:
            AudioDecodeError: When ``pieces`` (a decoding stream) raises it.
        """
        names = self.feature_names
        reason = None
        try:
            if bounded and self.config.feature_set == "eGeMAPSv02":
                values = self._bounded_functionals(pieces, int(sample_rate))
            else:
                data, _, _ = self._run("functionals", pieces, int(sample_rate),
                                       duration_s=duration_s)
                values = data[0] if len(data) else np.full(len(names), math.nan)
            values = self._undefined_to_nan(values, names)
        except AudioDecodeError:  # the input's fault, not openSMILE's
            raise
        except Exception as exc:  # openSMILE errors must not stop a batch
            reason = f"openSMILE failed: {type(exc).__name__}: {exc}"
            log.warning("%s; features set to NaN", reason)
            values = np.full(len(names), math.nan)
        return pd.Series(values, index=names, dtype="float64"), reason

    def _bounded_functionals(self, pieces: Iterable[np.ndarray], sample_rate: int
                             ) -> np.ndarray:
        """eGeMAPSv02 functionals of a stream in bounded openSMILE memory.

        One openSMILE instance runs eGeMAPSv02 up to the inputs of its functionals
        (:func:`_functional_inputs_egemaps`, ring buffers: the pitch tracker, Viterbi
        smoother and ``sma3`` smoothing see the whole stream); the frames of each input
        level are kept in float32 (:class:`_FrameStore`: 36 values x 4 bytes x 100 frames
        per second = 51.8 MB per hour of track) and the 88 functionals are computed from
        them with openSMILE's arithmetic
        (:func:`~atrisk.extractors.prosody.egemaps.opensmile_functionals`).

        Returns:
            The 88 values in :attr:`feature_names` order as openSMILE writes them (0 for
            undefined); NaN when the stream is too short to frame.
        """
        from atrisk.extractors.prosody.egemaps import CONTOUR_NAMES, opensmile_functionals

        clock = itertools.count()
        stores = {name: _FrameStore(clock) for name in _INPUT_SINKS}
        markers = {name: _Marker(clock) for name in _MARKER_SINKS}
        self._run("inputs", pieces, sample_rate, sinks={**markers, **stores})
        if any(store.frames == 0 for store in stores.values()):
            return np.full(len(self.feature_names), math.nan)
        cuts = _eoi_cuts(list(stores.values()), list(markers.values()), _MARKER_BLOCKS)
        contours: dict[str, np.ndarray] = {}
        names = iter(CONTOUR_NAMES)
        for store, cut in zip(stores.values(), cuts, strict=True):
            frames = store.array()[:cut]
            for i in range(frames.shape[1]):
                contours[next(names)] = frames[:, i]
        if len(contours) != len(CONTOUR_NAMES):
            raise RuntimeError(f"openSMILE gave {len(contours)} functional inputs, expected "
                               f"{len(CONTOUR_NAMES)}")
        return opensmile_functionals(contours)

    def process_signal_lld(self, signal: np.ndarray, sample_rate: int) -> pd.DataFrame:
        """Return the low-level descriptors of one signal, one row per frame.

        Args:
            signal: Samples, 1-D or ``(channels, samples)`` (channels are averaged).
            sample_rate: Rate of ``signal`` (Hz).

        Returns:
            Rows indexed by ``(start_s, end_s)`` of each frame (10 ms hop), one column per
            descriptor (:attr:`lld_names`); no rows when the signal is too short or
            openSMILE fails (a warning is logged).

        Raises:
            ValueError: As :meth:`process_signal`.
        """
        return self._lld(signal, sample_rate)[0]

    def _lld(self, signal: np.ndarray, sample_rate: int) -> tuple[pd.DataFrame, str | None]:
        """Return :meth:`process_signal_lld`'s result and why openSMILE failed."""
        x = mono_finite(signal, sample_rate)
        names = self.lld_names
        reason = None
        try:
            data, starts, ends = self._run("lld", x, int(sample_rate))
        except Exception as exc:
            reason = f"openSMILE failed: {type(exc).__name__}: {exc}"
            log.warning("%s on a %d-sample signal; no descriptors", reason, x.size)
            data, starts, ends = np.empty((0, len(names))), np.empty(0), np.empty(0)
        index = pd.MultiIndex.from_arrays([starts, ends], names=FRAME_INDEX)
        return pd.DataFrame(data, index=index, columns=names), reason

    def process_file(self, path: Path | str) -> pd.DataFrame:
        """Return the features of one file (decoded to :attr:`sample_rate` mono).

        The file is decoded by the ``ffmpeg`` binary in chunks of :attr:`chunk_s` seconds
        that are written to openSMILE as they come, so a track of hours is never held in
        memory (same samples as :func:`~atrisk.ingest.audio.load_audio`; without
        ``ffmpeg`` the whole track is decoded first).

        Args:
            path: Any file :func:`~atrisk.ingest.audio.load_audio` can decode.

        Returns:
            Functionals: one row indexed by the file path (index name ``file``);
            ``feature_level="lld"``: one row per frame indexed ``(file, start_s, end_s)``.

        Raises:
            AudioDecodeError: When the file cannot be decoded, has no audio stream or
                decodes to 0 samples.
        """
        level = self.config.feature_level
        if shutil.which("ffmpeg") is None:  # torchcodec only: decode the whole track
            signal = load_audio(path, self.sample_rate)
            chunks: Iterable[np.ndarray] = [signal]
        else:
            chunks = _stream_file(Path(path), self.sample_rate, self._chunk_samples(
                self.sample_rate))
        try:
            data, starts, ends = self._run(level, chunks, self.sample_rate)
        except AudioDecodeError:
            raise
        except Exception as exc:  # openSMILE errors must not stop a batch
            log.warning("openSMILE failed on %s (%s); features set to NaN", path, exc)
            width = len(self.lld_names if level == "lld" else self.feature_names)
            data, starts, ends = np.empty((0, width)), np.empty(0), np.empty(0)
        if level == "lld":
            index = pd.MultiIndex.from_arrays([[str(path)] * len(starts), starts, ends],
                                              names=["file", *FRAME_INDEX])
            return pd.DataFrame(data, index=index, columns=self.lld_names)
        names = self.feature_names
        values = data[0] if len(data) else np.full(len(names), math.nan)
        values = self._undefined_to_nan(values, names)
        return self.frame(values[None, :], pd.Index([str(path)], name="file", dtype="object"))

    def process_files(self, paths: Sequence[Path | str] | Iterable[Path | str]) -> pd.DataFrame:
        """Return the features of several files, in order, using :attr:`num_workers`.

        Args:
            paths: Files to process.

        Returns:
            The rows of :meth:`process_file` for each file, concatenated.

        Raises:
            AudioDecodeError: When a file cannot be decoded (use :meth:`process_sessions`
                with :func:`~atrisk.ingest.audio.decode_session` for batches that must not
                stop on a bad file).
        """
        parts = self._map(self.process_file, [str(p) for p in paths])
        if parts:
            return pd.concat(parts)
        if self.config.feature_level == "lld":
            return self._empty_lld(["file"])
        return self.frame(None, pd.Index([], name="file", dtype="object"))

    def process_sessions(self, decoded: Iterable[DecodedSession]) -> Extracted:
        """Return the features of every decoded track of the sessions.

        Functionals as :meth:`ProsodyBackend.process_sessions`; with
        ``feature_level="lld"``, frames indexed by ``(session_id, track, start_s, end_s)``.

        Args:
            decoded: Sessions from :func:`~atrisk.ingest.audio.decode_session`.

        Returns:
            The rows and the failures (keyed ``(session_id, track)``).
        """
        if self.config.feature_level != "lld":
            return super().process_sessions(decoded)
        jobs = [((item.session.session_id, track), signal,
                 int(getattr(item, "sample_rate", self.sample_rate)))
                for item in decoded for track in TRACKS
                if (signal := item.signals.get(track)) is not None]
        outcomes = self._map(self._lld_job, jobs)
        keys = [key for key, _, _ in jobs]
        failures = {key: f"{key[0]}/{key[1]}: {reason}"
                    for key, (_, reason) in zip(keys, outcomes, strict=True) if reason}
        if not outcomes:
            return Extracted(self._empty_lld(SESSION_INDEX), failures)
        frames = dict(zip(keys, [frame for frame, _ in outcomes], strict=True))
        return Extracted(pd.concat(frames, names=SESSION_INDEX), failures)

    def process_stream(self, blocks: Iterable[np.ndarray], sample_rate: int, session_id: str,
                       track: str, duration_s: float | None = None,
                       bounded: bool = True) -> Extracted:
        """Return :meth:`process_sessions`'s row of one track given as consecutive blocks.

        The blocks are written to one openSMILE instance as they come (the track is
        never held).  eGeMAPSv02 with ``bounded`` (the default): openSMILE computes the
        contours its functionals read with ring buffers, and the functionals are
        computed from those frames (:meth:`_bounded_functionals`), so openSMILE's memory
        does not grow with the track (the frames take 51.8 MB per hour); they are
        bit-identical to openSMILE's own functionals of the joined signal on every signal
        measured (docs/prosody.md): each contour is cut where openSMILE's functionals stop
        reading at end of input (:func:`_eoi_cuts`).  Otherwise (or ``bounded=False``) openSMILE
        computes the functionals over whole-track buffers: bit-identical to the joined
        signal's.

        Args:
            blocks: Mono float samples in order (e.g. from
                :func:`~atrisk.ingest.audio.stream_audio`); non-finite values count as 0.
            sample_rate: Rate of the blocks (Hz).
            session_id: Session of the track (first index level).
            track: ``"teacher"`` or ``"student"`` (second index level).
            duration_s: Expected length (e.g. from the file header), used only to size
                openSMILE's whole-track buffers once (a 3 h track otherwise ends in
                buffers for twice its frames); the features never depend on it.
            bounded: Compute eGeMAPSv02's functionals from streamed frames (bounded
                openSMILE memory); ``False``: openSMILE's whole-track functionals.

        Returns:
            One row indexed by ``(session_id, track)`` and the failure: NaN features and
            the reason when openSMILE fails.

        Raises:
            AudioDecodeError: When the block source fails to decode (no row then).
            ConfigError: When the extractor computes LLDs (``feature_level="lld"``).
        """
        if self.config.feature_level != "functionals":
            raise ConfigError("process_stream computes functionals (feature_level='functionals')")
        pieces = (mono_finite(b, sample_rate) for b in blocks)
        series, reason = self._functionals_of(pieces, sample_rate, duration_s, bounded)
        key = (session_id, track)
        failures = {key: f"{session_id}/{track}: {reason}"} if reason else {}
        index = pd.MultiIndex.from_tuples([key], names=SESSION_INDEX)
        return Extracted(self.frame(series.to_numpy()[None, :], index), failures)

    # -- helpers ---------------------------------------------------------------------

    def _functionals_job(self, job: tuple[Any, np.ndarray, int]) -> tuple[pd.Series, str | None]:
        return self._functionals(job[1], job[2])

    def _lld_job(self, job: tuple[Any, np.ndarray, int]) -> tuple[pd.DataFrame, str | None]:
        return self._lld(job[1], job[2])

    def _map(self, func: Any, items: list) -> list:
        """Apply ``func`` to ``items`` in order, in :attr:`num_workers` processes."""
        if self.num_workers == 1 or len(items) < 2:
            return [func(item) for item in items]
        with ProcessPoolExecutor(max_workers=min(self.num_workers, len(items))) as pool:
            return list(pool.map(func, items))

    def _empty_lld(self, names: list[str]) -> pd.DataFrame:
        levels = names + FRAME_INDEX
        index = pd.MultiIndex.from_arrays([[] for _ in levels], names=levels)
        return pd.DataFrame(np.empty((0, len(self.lld_names))), index=index,
                            columns=self.lld_names)
