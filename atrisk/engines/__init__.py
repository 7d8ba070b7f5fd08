"""Execution engines of ``atrisk extract``.

The ``local`` engine (a process pool on this machine) lives in
:mod:`atrisk.pipeline`; :mod:`atrisk.engines.ray_data` runs the same stages as a
Ray Data pipeline on a laptop or a Ray cluster.  Both write the same per-session
part files (the resume cache) and give identical tables.
"""
