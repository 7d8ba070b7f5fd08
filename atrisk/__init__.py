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

from atrisk.config import Config
from atrisk.errors import AtriskError
from atrisk.extract import Extractor, ExtractResult, SessionFeatures
from atrisk.features.in_class import InClassData
from atrisk.ingest.logs import Logs
from atrisk.mooc.model import MoocModel
from atrisk.records import Session, Utterance, Word
from atrisk.training.evaluate import EvaluationReport
from atrisk.training.model import RiskModel
from atrisk.version import __version__
from atrisk.workspace import Workspace

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
