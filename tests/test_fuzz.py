"""A fast seeded sample of the fuzz campaign (``scripts/fuzz.py``): damaged and hostile files are
refused with a BBCodecError or decode to exactly what was compressed; odd inputs are refused
cleanly or round-trip without expanding."""
import importlib.util
import random
import time
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("fuzz", Path(__file__).resolve().parents[1] / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(fuzz)
CASES = 240


@pytest.fixture(scope="module")
def corpus():
    fuzz._cache_models()
    fuzz._CORPUS = fuzz.build_corpus()
    return fuzz._CORPUS


def test_seeded_mutations_are_refused_or_exact(corpus):
    failures = []
    for seed in range(CASES):
        _, name, what, outcome, seconds = fuzz.case(seed)
        if fuzz.is_failure(outcome) or seconds > 60:  # a hang; loaded CI machines are slow
            failures.append((seed, name, what, outcome, round(seconds, 1)))
    assert not failures


def test_every_mutation_kind_is_drawn(corpus):
    kinds = {fuzz.mutate(random.Random(s), corpus[0]["bbc"])[0] for s in range(200)}
    assert {"flip", "field", "coding", "chunks", "bomb", "truncate", "concat"} <= kinds


@pytest.mark.parametrize("index", range(len(fuzz.input_cases(random.Random(0)))))
def test_odd_inputs_are_refused_or_round_trip(corpus, index):
    what, name, raw = fuzz.input_cases(random.Random(0))[index]
    t0 = time.perf_counter()
    outcome = fuzz.check_input(name, raw)
    assert not fuzz.is_failure(outcome), (what, outcome)
    assert time.perf_counter() - t0 < 60, what
