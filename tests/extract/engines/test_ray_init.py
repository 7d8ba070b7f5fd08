"""How many CPUs ``init_ray`` gives a local Ray (kept apart from test_ray_data.py, whose
module fixture starts Ray for every test in it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from atrisk.extract.engines import ray_data
from atrisk.extract.engines.ray_data import init_ray


@pytest.fixture
def ray_init_calls(monkeypatch):
    """``ray.init`` replaced by a recorder, Ray not yet running (nothing is started)."""
    import ray

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    return calls


def test_local_ray_defaults_to_the_usable_cpus(ray_init_calls, monkeypatch):
    """Not os.cpu_count(): that counts the host's CPUs under an affinity mask or quota."""
    monkeypatch.setattr(ray_data, "usable_cpus", lambda: 3)
    assert init_ray() is True
    assert init_ray(num_cpus=5) is True
    assert init_ray(address="10.0.0.1:6379") is True
    assert [c.get("num_cpus") for c in ray_init_calls] == [3, 5, None]
    assert ray_init_calls[2]["address"] == "10.0.0.1:6379"


@pytest.mark.slow  # starts a real local Ray (≈ 10-20 s on a busy 2-core machine)
def test_local_ray_on_one_allowed_cpu_has_one_cpu():
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "import ray; from atrisk.extract.engines.ray_data import init_ray; init_ray(); "
        "print(ray.cluster_resources()['CPU'], os.cpu_count()); ray.shutdown()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    assert float(out[-2]) == 1.0
    assert int(out[-1]) >= 1
