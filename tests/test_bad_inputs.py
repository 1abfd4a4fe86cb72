"""Every bad input of ``benchmarks/bad_inputs.py`` behaves as its committed table records.

The benchmark measures what each of its cases does (the error type and message, or the
warnings and the value returned) and writes ``benchmarks/results/bad_inputs.{md,csv}``. Here
every case runs again and must behave as recorded: a check that regresses (a clear error that
becomes a deep torch error, a warning that disappears) fails, and a deliberate change means
rerunning the benchmark and committing its table.

The recorded behaviours hold no digits of floating-point results (a value is written as its
decade), so they hold on any CPU, instruction set and number of torch threads; CI runs this
file again with ``ATEN_CPU_CAPABILITY=default`` and one thread (``.ci/run``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
bad_inputs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bad_inputs)
RECORDED = pd.read_csv(ROOT / "benchmarks" / "results" / "bad_inputs.csv")


def test_every_case_is_recorded():
    assert [description for _, description, _ in bad_inputs.CASES] == list(RECORDED["input"])


@pytest.mark.parametrize("number", list(RECORDED["number"]))
def test_bad_input_behaves_as_recorded(number):
    _, description, function = bad_inputs.CASES[number - 1]
    bad_inputs.DECADE_VALUES.clear()
    behaviour, message = bad_inputs.outcome(function)
    assert behaviour == RECORDED.loc[number - 1, "behaviour"], description
    if behaviour.startswith("**"):  # an error or a warning: it says what is wrong
        assert len(message) > 20, description
    # A value written as its decade sits well inside it: its last digits, which differ
    # between CPUs, cannot move it across a power of ten.
    for value in bad_inputs.DECADE_VALUES:
        assert bad_inputs.decade_margin(value) >= 1.5, (description, value)


def test_recorded_behaviours_hold_no_machine_digits():
    """Digits of a floating-point result differ between CPUs: the table holds none."""
    for behaviour in RECORDED["behaviour"]:
        assert bad_inputs.machine_digits(behaviour) == behaviour, behaviour


def test_decade_and_machine_digits():
    assert bad_inputs.decade(5.317e4, "loss") == "10^4 ≤ |loss| < 10^5"
    assert bad_inputs.decade(-0.03) == "10^-2 ≤ |value| < 10^-1"
    for value in (5.317e4, -0.03):
        text = bad_inputs.decade(value)
        assert bad_inputs.machine_digits(text) == text  # a decade is not a machine digit
    assert bad_inputs.decade_margin(5.317e4) == pytest.approx(10**0.2743, rel=1e-3)
    assert bad_inputs.decade_margin(1.02e3) < 1.5
    message = "step 3: reconstruction_loss=4217.94, kl_local=nan, kl_global=5.5e+02; loss=-1.5"
    assert bad_inputs.machine_digits(message) == (
        "step 3: reconstruction_loss=…, kl_local=nan, kl_global=…; loss=…"
    )
    assert bad_inputs.machine_digits("e.g. -3 for cell 'cell_100', gene 'gene_7'") == (
        "e.g. -3 for cell 'cell_100', gene 'gene_7'"
    )
