"""atrisk: find K-12 students at risk of dropping out of online tutoring.

The package turns class recordings (a teacher track and a student track per
class) and platform logs into a daily, ranked risk list.  See
``docs/architecture.md`` for the stages and ``atrisk --help`` for the CLI.
"""

__version__ = "0.1.0"
