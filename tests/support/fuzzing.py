"""How long the fuzz tests (``tests/fuzz``) run: a small fixed budget in ``make test``,
more for a local hunt.

``QGATE_FUZZ=long`` multiplies every fuzz test's examples by 50 (``QGATE_FUZZ_SCALE=N``
by N); the default keeps the whole fuzz set to a few tens of seconds on a 2-core machine.
No deadline: the machine is shared, so a slow example is not a finding. The default budget
is derandomized (the same examples every run: CI is red only for a change, never for a
new random draw); a scaled run draws at random to find new things. Failures print
their reproduction blob (``@reproduce_failure``); every one found becomes an ``@example``
or a plain test beside the property it broke.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from qgate.core.schemas import parse_schema
from qgate.protocols.http.container import write_container


def _scale() -> int:
    if os.environ.get("QGATE_FUZZ_SCALE"):
        return max(1, int(os.environ["QGATE_FUZZ_SCALE"]))
    return 50 if os.environ.get("QGATE_FUZZ") == "long" else 1


SCALE = _scale()
#: pytest-timeout's bound for a fuzz module (``pytestmark = FUZZ_TIMEOUT``), scaled too.
FUZZ_TIMEOUT = pytest.mark.timeout(120 * SCALE)


def fuzz(max_examples: int) -> settings:
    """The settings of one fuzz test: ``max_examples`` in CI, scaled for a long run."""
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        derandomize=SCALE == 1,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# -- Avro container files (HTTP avro/binary bodies) ------------------------------------------

RECORD = parse_schema(
    {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "n", "type": "long"},
            {"name": "s", "type": ["null", "string"], "default": None},
        ],
    }
)
records = st.lists(
    st.fixed_dictionaries({"n": st.integers(-(2**63), 2**63 - 1), "s": st.none() | st.text()}),
    max_size=5,
)


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    """A valid container file, then cut, overwritten or extended at a random place."""
    codec = draw(st.sampled_from(["null", "deflate"]))
    data = write_container(RECORD, draw(records), codec=codec, sync_marker=b"S" * 16)
    at = draw(st.integers(0, len(data)))
    how = draw(st.sampled_from(["cut", "flip", "insert", "append"]))
    junk = draw(st.binary(min_size=1, max_size=8))
    if how == "cut":
        return data[:at]
    if how == "flip":
        return data[:at] + junk + data[at + len(junk) :]
    if how == "insert":
        return data[:at] + junk + data[at:]
    return data + junk
