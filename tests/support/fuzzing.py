"""How long the fuzz tests (``tests/fuzz``) run: a small fixed budget in ``make test``,
more for a local hunt.

``QGATE_FUZZ=long`` multiplies every fuzz test's examples by 50 (``QGATE_FUZZ_SCALE=N``
by N); the default keeps the whole fuzz set to a few tens of seconds on a 2-core machine.
No deadline: the machine is shared, so a slow example is not a finding. Failures print
their reproduction blob (``@reproduce_failure``); every one found becomes an ``@example``
or a plain test beside the property it broke.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings


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
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
