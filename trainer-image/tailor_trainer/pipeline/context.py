"""What every stage of a run shares: the configuration, the process group, the store, scratch
space, tracking, and what the stages learn on the way (the quality report, the locked test
set, the recent holdout's plan, the label set)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tailor_contract.trainingjob import Data, Model, TrainingJobSpec

from tailor_trainer.config import ENV_WORK_DIR, RunConfig
from tailor_trainer.data.holdout import RecentPlan
from tailor_trainer.data.load import ColumnMap
from tailor_trainer.data.quality import QualityReport
from tailor_trainer.data.split import LockedTestSet
from tailor_trainer.dist import World
from tailor_trainer.metrics import Progress
from tailor_trainer.schedule import autocast_dtype
from tailor_trainer.storage import Store
from tailor_trainer.tracking import Tracker


@dataclass
class RunContext:
    cfg: RunConfig
    world: World
    store: Store
    work_dir: Path
    """This process's scratch folder (downloads, checkpoint staging, the files to publish)."""
    tracker: Tracker
    columns: ColumnMap
    """The data's columns by role; checked when the run starts (a bad spec fails at once)."""
    progress: Progress | None
    """Rank 0's Prometheus gauges; None on the other ranks."""
    quality: QualityReport | None = None
    """Rank 0: the gate's report, from the pass over the data."""
    gate_passed: bool = False
    """Rank 0: the gate let the data through (its outcome then belongs in any summary)."""
    locked: LockedTestSet | None = None
    recent: RecentPlan | None = None
    """Which production rows are the recent holdout (every rank; None without productionUris)."""
    labels: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, cfg: RunConfig, world: World) -> RunContext:
        spec = cfg.spec
        assert spec.data is not None and spec.model is not None
        # Processes on one node may share TAILOR_WORK_DIR; each keeps to its own folder.
        root = Path(os.environ.get(ENV_WORK_DIR) or tempfile.mkdtemp(prefix="tailor-"))
        work_dir = root / f"rank-{world.rank}"
        work_dir.mkdir(parents=True, exist_ok=True)
        tracking = spec.tracking
        experiment = (tracking.experiment if tracking and tracking.experiment
                      else os.environ.get("MLFLOW_EXPERIMENT_NAME") or cfg.model_name)
        # A trial's MLflow run is named for its number; it nests under the final run's.
        run_name = (f"{cfg.name}-trial-{cfg.trial.number}" if cfg.trial is not None
                    else f"{cfg.name}-{cfg.run_id}")
        tracker = Tracker((tracking.uri if tracking else None) if world.is_main else None,
                          experiment, cfg.run_id, run_name, cfg.artifact_uri)
        return cls(cfg=cfg, world=world, store=Store(spec.storage), work_dir=work_dir,
                   tracker=tracker, columns=ColumnMap.from_spec(spec.data),
                   progress=Progress() if world.is_main else None)

    @property
    def spec(self) -> TrainingJobSpec:
        return self.cfg.spec

    @property
    def data(self) -> Data:
        assert self.cfg.spec.data is not None
        return self.cfg.spec.data

    @property
    def model(self) -> Model:
        assert self.cfg.spec.model is not None
        return self.cfg.spec.model

    @property
    def amp(self) -> torch.dtype | None:
        """The autocast dtype every forward pass of this run uses."""
        return autocast_dtype(self.spec.hyperparameters.precision, self.world.device)
