"""Every bad input of ``benchmarks/bad_inputs.py`` behaves as its committed table records.

The benchmark measures what each of its cases does (the error type and message, or the
warnings and the value returned) and writes ``benchmarks/results/bad_inputs.{md,csv}``. Here
every case runs again and must behave as recorded: a check that regresses (a clear error that
becomes a deep torch error, a warning that disappears) fails, and a deliberate change means
rerunning the benchmark and committing its table.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bad_inputs)
RECORDED = pd.read_csv(ROOT / "benchmarks" / "results" / "bad_inputs.csv")


def test_every_case_is_recorded():
    assert [description for _, description, _ in bad_inputs.CASES] == list(RECORDED["input"])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the benchmark ran: numbers in its table are bitwise the same
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("number", list(RECORDED["number"]))
def test_bad_input_behaves_as_recorded(number):
    _, description, function = bad_inputs.CASES[number - 1]
    behaviour, message = bad_inputs.outcome(function)
    assert behaviour == RECORDED.loc[number - 1, "behaviour"], description
    if behaviour.startswith("**"):  # an error or a warning: it says what is wrong
        assert len(message) > 20, description
