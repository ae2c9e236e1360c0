"""Test-wide JAX set-up: 8 simulated CPU devices, float32 matmuls at full precision, one XLA
compilation cache for the session, a one-device default mesh outside the sharding tests, and
longer XLA:CPU collective timeouts.

Many tests build the same model and step in new ``jax.jit`` objects (each ``fit`` compiles its
own), which JAX's in-memory cache does not share; the persistent cache, keyed by the program
itself, does. It lives in a temporary folder (inherited by the tests' subprocesses through the
environment) and is removed at exit, so no run sees another's executables.

Every compiled program keeps a few memory maps for as long as JAX's caches hold it, and the
caches outlive the functions that compiled it: the suite's one process would pass Linux's
default limit of 65,530 maps (``vm.max_map_count``) after some thousands of programs, where
LLVM cannot allocate the next compile's code and the process dies in native code (SIGABRT or
SIGSEGV). The caches are cleared after each test module; the persistent cache keeps the next
module's recompiles cheap.

The 8 devices are there for the tests marked ``sharded``. Every other test gets a one-device
default mesh (``jaxnorm.parallel.data_mesh()`` with no devices): spreading a small CPU run over
8 simulated devices adds collectives and per-device programs (a ResNet-20 ``fit`` compiled 84
programs in 21 s on 8 devices, 4 in 14 s on one) and tests nothing a sharded test does not.
"""
import atexit
import functools
import os
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    _cache = tempfile.mkdtemp(prefix='jaxnorm-tests-xla-')
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
    os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.5'

# XLA:CPU aborts the whole process (SIGABRT: "Termination timeout ... Exiting to ensure a
# consistent program state") when a device thread reaches a collective's rendezvous 40 s after
# the first one; 8 simulated devices sharing 2 loaded cores can be that late. The tests'
# process and its subprocesses wait up to 30 minutes instead.
_XLA_FLAGS = os.environ.get('XLA_FLAGS', '')
if 'xla_cpu_collective_call_terminate_timeout_seconds' not in _XLA_FLAGS:
    os.environ['XLA_FLAGS'] = (
        f'{_XLA_FLAGS} --xla_cpu_collective_call_warn_stuck_timeout_seconds=300 '
        '--xla_cpu_collective_call_terminate_timeout_seconds=1800').strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_default_matmul_precision', 'highest')

from jaxnorm import parallel  # noqa: E402  (after the device count is set)


@pytest.fixture(autouse=True)
def one_device_default_mesh(request, monkeypatch):
    """Outside tests marked ``sharded``, ``parallel.data_mesh()`` defaults to the first device
    (an explicit device list is kept as given)."""
    if request.node.get_closest_marker('sharded'):
        return
    every_device_mesh = parallel.data_mesh

    @functools.wraps(every_device_mesh)
    def first_device_mesh(devices=None):
        return every_device_mesh(jax.devices()[:1] if devices is None else devices)

    monkeypatch.setattr(parallel, 'data_mesh', first_device_mesh)


@pytest.fixture(autouse=True, scope='module')
def caches_cleared_after_each_module():
    """Frees the compiled programs (and their memory maps) a test module leaves behind."""
    yield
    jax.clear_caches()
