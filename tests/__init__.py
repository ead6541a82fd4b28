import pytest

# Asserts in the helpers and in the storage contract's base classes (modules pytest does not
# collect) get pytest's messages too.
pytest.register_assert_rewrite("tests.support", "tests.storage")
