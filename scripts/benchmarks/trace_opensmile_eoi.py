"""Trace, tick by tick, the frames openSMILE writes to the functionals' inputs at end of input.

Evidence for ``docs/prosody.md`` (section "Which frames openSMILE's functionals read").
Runs the bounded path's openSMILE config (:func:`atrisk.extractors.prosody.
_functional_inputs_egemaps`) with the component manager's ``execDebug = 1`` (a summary
line per tick in the log) and every sink reading one frame per tick.  Each sink read is
mapped to its tick by the log file's size when the read arrives (openSMILE writes the
log as it runs, in the same thread as the sink callbacks).  Prints JSON: the tick the
EOI condition was set after, and per level the frames read before end of input and the
frames read in each later tick, next to the frames openSMILE's functionals read (the
bounded path's cut, :func:`atrisk.extractors.prosody._eoi_cuts`).

Usage:
    .venv/bin/python scripts/benchmarks/trace_opensmile_eoi.py \
        ../shared/data/speech/speechbrain/tests/samples/single-mic/example2.flac
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from atrisk.extractors import prosody
from atrisk.ingest.audio import load_audio

SR = 16000


def _cuts(path: Path) -> list[int]:
    """The bounded path's cut per level (sinks of 100 frames, markers)."""
    ex = prosody.OpenSmileProsody()
    clock = itertools.count()
    stores = [prosody._FrameStore(clock) for _ in prosody._INPUT_SINKS]
    markers = [prosody._Marker(clock) for _ in prosody._MARKER_SINKS]
    sinks = dict(zip(prosody._MARKER_SINKS + prosody._INPUT_SINKS, markers + stores,
                     strict=True))
    ex._run("inputs", [load_audio(path, SR)], SR, sinks=sinks)
    return prosody._eoi_cuts(stores, markers, prosody._MARKER_BLOCKS)


def trace(path: Path) -> dict:
    """Return the per-tick trace of ``path`` (see the module docstring)."""
    cuts = _cuts(path)
    # the same config, sinks reading one frame per tick, a summary line per tick
    prosody._INPUTS_CONF = prosody._INPUTS_CONF.replace(
        "printLevelStats=0", "printLevelStats=0\nexecDebug=1").replace(
        f"blocksize = {prosody._SINK_BLOCK}\n", "blocksize = 1\n")
    ex = prosody.OpenSmileProsody()
    smile = ex._smile_for("inputs")
    log = Path(tempfile.mkdtemp()) / "smile.log"
    smile.logfile, smile.loglevel = str(log), 3
    reads: list[tuple[int, str, int]] = []

    def sink(name: str):
        def callback(data: np.ndarray, meta) -> None:
            size = log.stat().st_size if log.exists() else 0
            reads.append((size, name, int(meta.vIdx)))
        return callback

    ex._run("inputs", [load_audio(path, SR)], SR,
            sinks={n: sink(n) for n in prosody._INPUT_SINKS})
    text = log.read_text()
    ticks = [(m.start(), int(m.group(1)))
             for m in re.finditer(r"SUMMARY tick #(\d+) thread", text)]
    eoi = [int(m.group(1)) for m in re.finditer(
        r"Setting EOI condition = 1\. EOI counter = \d+\. tickNr = (\d+)", text)]
    os.remove(log)
    starts = np.array([t[0] for t in ticks])
    levels = {}
    for name, level, cut in zip(prosody._INPUT_SINKS, prosody._FUNCTIONAL_INPUTS, cuts,
                                strict=True):
        tick_of = [ticks[int(np.searchsorted(starts, off))][1]
                   for off, n, _ in reads if n == name]
        before = sum(t <= eoi[0] for t in tick_of)
        after = [t for t in tick_of if t > eoi[0]]
        levels[level] = {"frames_read_before_eoi": before,
                         "frames_read_per_later_tick": dict(sorted(
                             {t: after.count(t) for t in after}.items())),
                         "frames_written": len(tick_of),
                         "functionals_read": cut}
    return {"file": str(path), "eoi_set_after_ticks": eoi, "levels": levels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    args = ap.parse_args(argv)
    if not args.file.is_file():
        print(f"no such file: {args.file}", file=sys.stderr)
        return 1
    print(json.dumps(trace(args.file), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
