"""CPU and memory helpers of the extract stage: usable CPUs, torch threads, freed memory."""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: torch intra-op threads of the torch prosody backend on the CPU, whatever the run's
#: ``threads``: its tensors are one track or utterance, and extra threads mostly spin
#: (docs/performance.md#prosody-threads).
PROSODY_TORCH_THREADS = 1
#: Tracks at least this long (samples) give their freed memory back to the OS at once.
LONG_TRACK_SAMPLES = 16000 * 600


def usable_cpus() -> int:
    """Return the CPUs this process may use: its affinity and cgroup CPU quota, at least 1.

    ``os.cpu_count()`` counts the host's CPUs, so in a container limited to 2 CPUs of a
    16-CPU host it gives 16 (and torch would start 16 threads); joblib's ``cpu_count``
    honours the affinity mask and the cgroup quota.
    """
    from joblib import cpu_count

    return max(1, int(cpu_count()))


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to ``n``; restored afterwards.

    Args:
        n: Threads (at least 1); ``None`` leaves the count alone.  Nothing is done when
            torch is not imported (no torch model in this process).
    """
    torch = sys.modules.get("torch")
    if n is None or torch is None:
        yield
        return
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def release_memory(n_samples: int | None) -> None:
    """After a long track, give freed heap memory back to the OS (glibc keeps it otherwise).

    Decoding a long track leaves about its own size of freed buffers in the heap;
    returning them keeps the peak of a multi-hour class to one track's work.  Short
    tracks skip this (a garbage collection per track would cost more than it frees).

    Args:
        n_samples: Samples of the track just finished (``None``: nothing decoded).
    """
    if n_samples is None or n_samples < LONG_TRACK_SAMPLES:
        return
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
