"""Fuzz the model loader: mutated model files must give a ModelError (or load), never another exception.

Bounded in CI; run longer with EDGEKIT_FUZZ_EXAMPLES=20000 pytest tests/hostile/test_fuzz_loader.py
"""

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.errors import EdgekitError
from edgekit.modelio import load_model
from edgekit.samples import super_resolution, transformer_block

EXAMPLES = int(os.environ.get("EDGEKIT_FUZZ_EXAMPLES", "150"))
SEEDS = [super_resolution().SerializeToString(), transformer_block().SerializeToString()]


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None, insert: tuple[int, bytes] | None) -> bytes:
    buffer = bytearray(data)
    for position, value in flips:
        buffer[position % len(buffer)] = value
    if insert is not None:
        position, blob = insert
        buffer[position % len(buffer): position % len(buffer)] = blob
    if cut is not None:
        buffer = buffer[: cut % (len(buffer) + 1)]
    return bytes(buffer)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], database=None)
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
    cut=st.none() | st.integers(0, 1 << 20),
    insert=st.none() | st.tuples(st.integers(0, 1 << 20), st.binary(min_size=1, max_size=32)),
)
def test_mutated_models_fail_cleanly(tmp_path_factory, seed, flips, cut, insert):
    folder: Path = tmp_path_factory.mktemp("fuzz")
    path = folder / "m.onnx"
    path.write_bytes(mutate(SEEDS[seed], flips, cut, insert))
    try:
        load_model(path)
    except EdgekitError:
        pass  # the expected outcome for most mutations: a clear, typed error
