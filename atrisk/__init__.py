"""atrisk: find K-12 students at risk of dropping out of online tutoring.

The package turns class recordings (a teacher track and a student track per class) and
platform logs into a daily, ranked risk list.  The public API::

    from atrisk import Config, Extractor, Logs, RiskModel, MoocModel, Session, Utterance

    ext = Extractor(Config.load("atrisk.toml"), device="auto")   # models load once
    ext.extract("recordings/", workspace="ws/")                   # batch, resumable
    logs = Logs.read("logs/")                                     # or Logs.from_frames(...)
    model = RiskModel().fit(logs, "ws/")                          # carries its whole config
    risk = model.rank(logs, "ws/", date="2024-05-01", horizon=1)

See ``docs/api.md`` for the whole surface, ``docs/architecture.md`` for the stages and
``atrisk --help`` for the command line.  Importing this package does not import torch.
"""

import os as _os

# LightGBM's OpenMP threads otherwise spin while waiting, which on a shared or busy
# machine burns the CPU the fits need (docs/performance.md, "Training threads").  Read
# when OpenMP starts, so it is set before anything imports lightgbm; a value the user
# set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from atrisk.config import Config  # noqa: E402
from atrisk.errors import AtriskError  # noqa: E402
from atrisk.extract import Extractor, ExtractResult, SessionFeatures  # noqa: E402
from atrisk.features.in_class import InClassData  # noqa: E402
from atrisk.ingest.logs import Logs  # noqa: E402
from atrisk.mooc.model import MoocModel  # noqa: E402
from atrisk.records import Session, Utterance, Word  # noqa: E402
from atrisk.training.evaluate import EvaluationReport  # noqa: E402
from atrisk.training.model import RiskModel  # noqa: E402
from atrisk.version import __version__  # noqa: E402
from atrisk.workspace import Workspace  # noqa: E402

__all__ = [
    "AtriskError",
    "Config",
    "EvaluationReport",
    "ExtractResult",
    "Extractor",
    "InClassData",
    "Logs",
    "MoocModel",
    "RiskModel",
    "Session",
    "SessionFeatures",
    "Utterance",
    "Word",
    "Workspace",
    "__version__",
]
