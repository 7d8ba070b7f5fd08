"""Features: in-class table, platform logs, time-variant windows and ``<student, t>`` pairs.

The modules here import without torch (pandas, numpy and scikit-learn only):

- :mod:`atrisk.features.logs` loads and validates the ``logs/`` folder and computes
  the out-of-class features (prefix ``out_``).
- :mod:`atrisk.features.time_variant` computes look-back windows and teacher history
  (prefix ``time_``).
- :mod:`atrisk.features.in_class` joins prosody and text tables into one row per
  session and averages the latest sessions before ``t`` (prefix ``in_``).
- :mod:`atrisk.features.pairs` builds one row per ``<student, t>``.
"""
