"""The workaround for the suite's SIGABRT (#25): compiled programs hold memory maps until JAX's
caches are cleared, which ``tests/conftest.py`` does after every module.

Linux's ``vm.max_map_count`` (65,530 by default) bounds a process's maps; one pytest process
that compiles thousands of programs reaches it and LLVM aborts in the next compile. This test
pins down the mechanism the conftest relies on.
"""
import os

import jax
import jax.numpy as jnp
import pytest

PROGRAMS = 60


def memory_maps() -> int:
    with open('/proc/self/maps') as f:
        return sum(1 for _ in f)


@pytest.mark.skipif(not os.path.exists('/proc/self/maps'), reason='needs Linux /proc')
def test_compiled_programs_keep_maps_until_the_caches_are_cleared():
    def compile_programs(count, offset):
        for k in range(offset, offset + count):
            # A new function and a new shape each time: a distinct program, compiled for real.
            step = jax.jit(lambda x, k=k: jnp.tanh(x @ x.T + k).sum(0))
            step(jnp.ones((3 + k, 4))).block_until_ready()

    compile_programs(PROGRAMS, 0)  # thread pools and allocator arenas settle
    jax.clear_caches()
    before = memory_maps()
    compile_programs(PROGRAMS, PROGRAMS)
    grown = memory_maps() - before
    # The functions are gone, yet their programs' maps stay: about 3 per program on x86 CPU.
    assert grown >= PROGRAMS
    jax.clear_caches()
    assert memory_maps() - before < grown / 4
