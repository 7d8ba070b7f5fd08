"""Word and character error rates of an ASR backend on a manifest of utterances.

A manifest is a tab-separated file with a header row holding at least the
columns ``path`` and ``text`` (any order, any case; more columns are ignored),
and optionally ``speaker``::

    path	speaker	text
    SPEAKER1465/014650011.WAV	SPEAKER1465	HANDY CAN DRAW THE TURKEY

Relative paths are read from the manifest's folder.  :func:`read_manifest`
parses it (bad rows are reported, not fatal), :func:`score` computes WER/CER
with jiwer after :func:`atrisk.asr.normalize.normalize_text` on both sides, and
:func:`evaluate_manifest` transcribes every row with a backend and returns the
numbers overall and per speaker, with the real-time factor.

Example:
    >>> score(["the cat sat"], ["the cat sat down"])["wer"]
    0.3333333333333333
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atrisk.asr.normalize import normalize_text
from atrisk.config import AUTO_BACKEND, ASRConfig
from atrisk.errors import AtriskError, ConfigError, RowError
from atrisk.registry import ASR_BACKENDS

#: Columns a manifest must have.
REQUIRED_COLUMNS = ("path", "text")
#: Files transcribed per ``transcribe_batch`` call.
FILES_PER_BATCH = 16
#: Reference/hypothesis pairs kept in the result as examples.
N_EXAMPLES = 10


@dataclass(frozen=True)
class ManifestRow:
    """One usable row of a manifest.

    Attributes:
        row: 1-based line number in the file (the header is line 1).
        path: Audio file, resolved against the manifest's folder.
        text: Reference transcript as written in the file (not normalised).
        speaker: Speaker id; ``""`` when the manifest has no ``speaker`` column.
    """

    row: int
    path: Path
    text: str
    speaker: str = ""


def read_manifest(path: Path | str) -> tuple[list[ManifestRow], list[RowError]]:
    """Read a ``path, text[, speaker]`` TSV; rows without a path or text are reported.

    Args:
        path: The manifest file.

    Returns:
        The usable rows (their audio files exist) and one :class:`~atrisk.errors.RowError`
        per bad row (empty path or text, missing audio file, wrong number of fields).

    Raises:
        ConfigError: When the file does not exist, is empty, or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist")
    base = path.parent
    rows: list[ManifestRow] = []
    errors: list[RowError] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header:
            raise ConfigError(f"manifest {path} is empty: expected a header row with "
                              f"{', '.join(REQUIRED_COLUMNS)} (tab-separated)")
        cols = [c.strip().lower() for c in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in cols]
        if missing:
            raise ConfigError(
                f"manifest {path}: missing column(s) {', '.join(missing)} in the header "
                f"{header!r}; expected tab-separated columns path, text (and optionally speaker)"
            )
        i_path, i_text = cols.index("path"), cols.index("text")
        i_spk = cols.index("speaker") if "speaker" in cols else None
        for line_no, fields in enumerate(reader, start=2):
            if not fields or all(not f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(cols):
                errors.append(RowError(str(path), line_no,
                                       f"expected {len(cols)} tab-separated fields, got "
                                       f"{len(fields)}"))
                continue
            rel = fields[i_path].strip()
            if not rel:
                errors.append(RowError(str(path), line_no, "empty path"))
                continue
            audio = Path(rel).expanduser()
            audio = audio if audio.is_absolute() else base / audio
            speaker = fields[i_spk].strip() if i_spk is not None else ""
            if not audio.is_file():
                errors.append(RowError(str(path), line_no, f"audio file {audio} does not exist",
                                       key=rel))
                continue
            rows.append(ManifestRow(line_no, audio, fields[i_text], speaker))
    return rows, errors


def score(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float | int]:
    """Corpus-level WER and CER of hypotheses against references, after normalisation.

    Both sides go through :func:`~atrisk.asr.normalize.normalize_text`.  WER is
    (substitutions + deletions + insertions) / reference words, summed over all
    pairs (not a mean of per-utterance rates); CER is the same over characters
    (spaces included).  An empty reference with an empty hypothesis counts as 0
    errors; when all references are empty the rates are the number of errors.

    Args:
        references: Reference transcripts.
        hypotheses: Recognised transcripts, one per reference.

    Returns:
        ``wer``, ``cer``, ``words`` (reference words), ``chars`` (reference characters),
        ``hits``, ``substitutions``, ``deletions``, ``insertions`` (word level), and
        ``char_errors``; ``n`` pairs.

    Raises:
        ValueError: When the two lists differ in length.
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize_text(r) for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    out: dict[str, float | int] = {"n": len(refs)}
    if not refs:
        return out | {"wer": float("nan"), "cer": float("nan"), "words": 0, "chars": 0,
                      "hits": 0, "substitutions": 0, "deletions": 0, "insertions": 0,
                      "char_errors": 0}
    w = jiwer.process_words(refs, hyps)
    c = jiwer.process_characters(refs, hyps)
    words = w.hits + w.substitutions + w.deletions
    chars = c.hits + c.substitutions + c.deletions
    w_err = w.substitutions + w.deletions + w.insertions
    c_err = c.substitutions + c.deletions + c.insertions
    return out | {
        "wer": w_err / words if words else float(w_err),
        "cer": c_err / chars if chars else float(c_err),
        "words": int(words),
        "chars": int(chars),
        "hits": int(w.hits),
        "substitutions": int(w.substitutions),
        "deletions": int(w.deletions),
        "insertions": int(w.insertions),
        "char_errors": int(c_err),
    }


def evaluate_manifest(
    manifest: Path | str,
    backend: str = "pocketsphinx",
    model: str | None = None,
    device: str = "auto",
    config: ASRConfig | None = None,
    progress: bool = True,
) -> dict:
    """Transcribe every row of a manifest and score it against the references.

    Each file is decoded to 16 kHz mono and transcribed the way ``atrisk extract``
    transcribes a track (VAD segments, then the backend); the hypothesis is the
    segments' text joined by spaces.  Rows whose audio is missing or cannot be
    decoded are listed in ``failures`` and left out of the scores.

    Args:
        manifest: TSV with ``path``, ``text`` and optionally ``speaker`` (see module docstring).
        backend: ``"wav2vec2"``, ``"whisper"``, ``"pocketsphinx"`` or ``"auto"``
            (:func:`atrisk.asr.auto.resolve_backend`).
        model: wav2vec2 checkpoint (hub id or folder; ``None`` uses ``config.model``) or
            Whisper model (folder or name; ``None`` uses ``config.whisper_model``, else
            the bundled tiny.en).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        config: ASR settings (VAD, batch size); defaults when ``None``.
        progress: Show a progress bar.

    Returns:
        A JSON-ready dict: ``manifest``, ``asr_model``, ``device``, ``normalisation``,
        ``rows`` (data rows seen), ``evaluated``, ``failed``, the :func:`score` fields
        overall, ``audio_s``, ``wall_s`` (transcription only, decoding included),
        ``load_s`` (model loading), ``rtf`` (= ``wall_s / audio_s``), ``cpu_s`` and
        ``cpu_rtf`` (CPU time of this process, all threads: the RTF on a busy machine),
        ``per_speaker``
        (speaker -> :func:`score` fields and ``audio_s``), ``examples`` (the first
        reference/hypothesis pairs, normalised) and ``failures`` (row, reason).

    Raises:
        ConfigError: When the manifest is unusable or the backend/device is invalid.
        ModelLoadError: When the model cannot be loaded.
    """
    from atrisk.asr import load_transcriber
    from atrisk.asr.base import MODEL_SAMPLE_RATE
    from atrisk.ingest.audio import load_audio
    from atrisk.progress import progress_bar

    audio = [n for n, target in ASR_BACKENDS.items() if target]
    if backend not in (AUTO_BACKEND, *audio):
        raise ConfigError(f"asr evaluate needs an audio backend ({AUTO_BACKEND}, "
                          f"{', '.join(audio)}), got {backend!r}")
    config = config or ASRConfig()
    rows, errors = read_manifest(manifest)
    t0 = time.perf_counter()
    transcriber = load_transcriber(backend, model=model, device=device, config=config)
    load_s = time.perf_counter() - t0
    done: list[tuple[ManifestRow, str, float]] = []  # row, hypothesis, audio seconds
    wall = cpu = 0.0
    with progress_bar("transcribing", len(rows), enabled=progress) as bar:
        for k in range(0, len(rows), FILES_PER_BATCH):
            t0, c0 = time.perf_counter(), time.process_time()
            batch, signals = [], []
            for r in rows[k : k + FILES_PER_BATCH]:
                try:
                    signals.append(load_audio(r.path, sample_rate=MODEL_SAMPLE_RATE))
                    batch.append(r)
                except AtriskError as exc:
                    errors.append(RowError(str(manifest), r.row, f"cannot decode {r.path}: "
                                           f"{exc}", key=str(r.path)))
            results = transcriber.transcribe_batch(signals, MODEL_SAMPLE_RATE) if signals else []
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            for r, x, segs in zip(batch, signals, results, strict=True):
                done.append((r, " ".join(s.text for s in segs), x.size / MODEL_SAMPLE_RATE))
            bar.advance(len(rows[k : k + FILES_PER_BATCH]))
    errors.sort(key=lambda e: e.row or 0)
    audio_s = sum(d[2] for d in done)
    overall = score([d[0].text for d in done], [d[1] for d in done])
    per_speaker = {}
    for spk in sorted({d[0].speaker for d in done}):
        part = [d for d in done if d[0].speaker == spk]
        per_speaker[spk or "-"] = score([d[0].text for d in part], [d[1] for d in part]) | {
            "audio_s": round(sum(d[2] for d in part), 3)}
    # rtf and cpu_rtf are the ratios of the figures reported (seconds to the ms), as the
    # docstring says: an unrounded ratio differs from them by up to 0.0005 s / wall.
    audio_s, wall, cpu = round(audio_s, 3), round(wall, 3), round(cpu, 3)
    return {
        "manifest": str(manifest),
        "asr_model": transcriber.name,
        "device": str(getattr(transcriber, "device", "cpu")),
        "normalisation": "atrisk.asr.normalize.normalize_text",
        "rows": len(done) + len(errors),
        "evaluated": len(done),
        "failed": len(errors),
        **overall,
        "audio_s": audio_s,
        "wall_s": wall,
        "load_s": round(load_s, 3),
        "rtf": wall / audio_s if audio_s > 0 else float("nan"),
        "cpu_s": cpu,
        "cpu_rtf": cpu / audio_s if audio_s > 0 else float("nan"),
        "per_speaker": per_speaker,
        "examples": [{"row": r.row, "reference": normalize_text(r.text),
                      "hypothesis": normalize_text(h)} for r, h, _ in done[:N_EXAMPLES]],
        "failures": [e.to_dict() for e in errors],
    }
