"""Data parallelism: one ``data`` mesh axis over every device of every process.

Parameters are replicated and the batch is sharded along its leading axis; ``jax.jit`` then
inserts the collectives, so BatchNorm statistics are global without any ``axis_name``. Several
processes (GPU nodes, TPU pod hosts, or two processes on one CPU machine) run JAX's
multi-controller runtime: each process feeds its own slice of every global batch and
:func:`global_batch` assembles the global array.
"""
from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join a multi-process run (call before any other JAX use).

    With no arguments JAX detects the cluster itself (Cloud TPU pods, SLURM, Open MPI).
    The CPU backend's cross-process collectives go through gloo (the setting does not affect
    GPU or TPU backends).
    """
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the ``data`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(global_batch_size: int, mesh: Mesh, what: str = 'batch size') -> None:
    """Raise a clear error when a global batch cannot be split evenly over the devices."""
    if global_batch_size % mesh.size:
        raise ValueError(f'{what} {global_batch_size} is not divisible by the {mesh.size} '
                         f'devices; use a multiple of {mesh.size}')


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble each process's slice of a batch into one batch-sharded global array."""
    sharding = batch_sharded(mesh)
    return {key: jax.make_array_from_process_local_data(sharding, value)
            for key, value in local_batch.items()}


class SeedPlacement:
    """Where a seed-batched run's arrays live: every state leaf and train batch has a leading
    seed axis of length ``num_seeds``.

    When the devices divide the seeds evenly, the seed axis is spread over them (each device
    trains its own seeds, with no communication); otherwise the state is replicated and each
    seed's batch is split over the devices, as in a one-seed run. Seed-batched runs are
    single-process.
    """

    def __init__(self, mesh: Mesh, num_seeds: int):
        if jax.process_count() > 1:
            raise ValueError('seed-batched runs (num_seeds > 1) run in one process; start one '
                             'process per seed group instead')
        self.mesh, self.num_seeds = mesh, num_seeds
        self.by_seed = num_seeds % mesh.size == 0
        self.state = batch_sharded(mesh) if self.by_seed else replicated(mesh)
        self.train_batch = (batch_sharded(mesh) if self.by_seed else
                            NamedSharding(mesh, PartitionSpec(None, DATA_AXIS)))
        self.eval_batch = replicated(mesh) if self.by_seed else batch_sharded(mesh)

    def put(self, batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict:
        return {key: jax.device_put(value, sharding) for key, value in batch.items()}
