"""Atomic, resumable checkpoints of a training run with orbax ``CheckpointManager``.

One checkpoint per finished epoch holds the whole train state (step, params, batch_stats,
opt_state, RNG) and a JSON record of the run's identity (model, norm, dataset, ...). Orbax
writes each checkpoint to a temporary folder and renames it when complete, so a killed run
leaves only whole checkpoints; in a multi-process run every process takes part in the save.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

STATE_ITEM = 'state'
RUN_ITEM = 'run'


class IncompatibleCheckpointError(ValueError):
    """The workdir holds checkpoints of a different run."""


class RunCheckpointer:
    """Save and restore epoch checkpoints under ``<workdir>/checkpoints``.

    Args:
      workdir: the run's folder.
      keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, workdir: str, *, keep: int = 2):
        self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
        self._keep = keep
        self._manager = None

    def _open(self) -> ocp.CheckpointManager:
        if self._manager is None:
            self._manager = ocp.CheckpointManager(
                self.directory, item_names=(STATE_ITEM, RUN_ITEM),
                options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True))
        return self._manager

    def latest_epoch(self) -> int | None:
        """The newest saved epoch, or None when there is no checkpoint (creates nothing)."""
        if not os.path.isdir(self.directory):
            return None
        return self._open().latest_step()

    def epochs(self) -> list[int]:
        """Every saved epoch, oldest first (creates nothing)."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(self._open().all_steps())

    def check_epoch(self, epoch: int) -> None:
        """Raise ``FileNotFoundError`` naming the saved epochs when ``epoch`` is not one."""
        saved = self.epochs()
        if epoch not in saved:
            raise FileNotFoundError(
                f'no checkpoint of epoch {epoch} in {self.directory}; saved epochs: '
                f'{", ".join(map(str, saved)) or "none"}')

    def delete_after(self, epoch: int) -> None:
        """Delete every checkpoint newer than ``epoch`` (a restart from ``epoch``)."""
        for later in [e for e in self.epochs() if e > epoch]:
            self._open().delete(later)

    def saved_run(self) -> dict | None:
        """The run record stored with the newest checkpoint, or None."""
        epoch = self.latest_epoch()
        if epoch is None:
            return None
        restored = self._open().restore(epoch, args=ocp.args.Composite(
            **{RUN_ITEM: ocp.args.JsonRestore()}))
        return dict(restored[RUN_ITEM])

    def check_compatible(self, run: Mapping[str, Any]) -> None:
        """Raise :class:`IncompatibleCheckpointError` if the saved run differs from ``run``."""
        saved = self.saved_run()
        if saved is None:
            return
        # Compared as stored: JSON turns tuples (e.g. hidden=(300, 100)) into lists.
        run = json.loads(json.dumps(dict(run)))
        differing = {k: (saved.get(k), v) for k, v in run.items() if saved.get(k) != v}
        if differing:
            details = '; '.join(f'{k}: saved {a!r}, now {b!r}' for k, (a, b) in differing.items())
            raise IncompatibleCheckpointError(
                f'workdir {os.path.dirname(self.directory)} holds checkpoints of another run '
                f'({details}); choose a new --workdir or delete the old one')

    def save(self, epoch: int, state_arrays: Any, run: Mapping[str, Any]) -> None:
        """Start writing the checkpoint of ``epoch`` (asynchronously; see :meth:`wait`)."""
        self._open().save(epoch, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state_arrays),
            RUN_ITEM: ocp.args.JsonSave(dict(run))}))

    def restore(self, epoch: int, like: Any) -> Any:
        """Restore the state saved at ``epoch`` with the structure and shardings of ``like``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self._open().restore(epoch, args=ocp.args.Composite(
            **{STATE_ITEM: ocp.args.StandardRestore(abstract)}))
        return restored[STATE_ITEM]

    def wait(self) -> None:
        """Block until every started save is on disk."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


def load_arrays(workdir: str, epoch: int | None = None) -> dict:
    """Read a run's saved state as numpy arrays, on any device count or machine.

    Args:
      workdir: the run's folder.
      epoch: which checkpoint (default: the newest).

    Returns:
      The dict of :meth:`jaxnorm.train.TrainState.arrays` (``step``, ``params``,
      ``batch_stats``, ``opt_state``, ``rng``) with numpy leaves.
    """
    checkpointer = RunCheckpointer(workdir)
    epoch = checkpointer.latest_epoch() if epoch is None else epoch
    if epoch is None:
        raise FileNotFoundError(f'no checkpoint in {checkpointer.directory}')
    path = os.path.join(checkpointer.directory, str(epoch), STATE_ITEM)
    reader = ocp.PyTreeCheckpointer()
    tree = reader.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
