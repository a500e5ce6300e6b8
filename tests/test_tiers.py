"""Each test's tier (tests/conftest.py derive_tier): from the fixtures it uses, the envs it needs
and its explicit marker, so that a new test lands in the right tier of `make test`."""
import conftest
import pytest
from conftest import FIXTURE_TIER, MODULE_TIER, REPO, TIERS, derive_tier

SERVE_REASON = conftest.needs_serve.kwargs["reason"]
TARGET_REASON = conftest.needs_target.kwargs["reason"]


@pytest.mark.parametrize("fixtures, explicit, reasons, module, tier", [
    ((), (), (), "test_x", "unit"),
    (("tmp_path", "tiny_data_dir"), (), (), "test_x", "unit"),
    (("tmp_path", "tiny_model_dir"), (), (), "test_x", "model"),
    (("quantized_lanes",), (), (), "test_x", "model"),
    ((), (), (TARGET_REASON,), "test_x", "serve"),
    (("tiny_model_dir",), (), ("opt-in: SMOKE=1", SERVE_REASON), "test_x", "serve"),
    (("tiny_model_dir", "workflow_dir"), (), (SERVE_REASON,), "test_x", "e2e"),
    (("demo_plan",), (), (), "test_x", "e2e"),
    ((), ("e2e",), (), "test_x", "e2e"),  # a marker may ask for more than its fixtures need
    ((), ("slurm",), (), "test_x", "slurm"),
    ((), (), (), "test_base", "model"),
    ((), ("e2e",), (), "test_base", "e2e"),
])
def test_tier_is_the_highest_of_what_the_test_uses(fixtures, explicit, reasons, module, tier):
    assert derive_tier(fixtures, explicit, reasons, module) == tier


@pytest.mark.parametrize("fixtures, explicit, needle", [
    (("tiny_model_dir",), ("unit",), "marked unit, but what it uses needs the model tier"),
    ((), ("unit", "e2e"), "more than one tier marker (e2e, unit)"),
])
def test_contradicting_markers_are_refused(fixtures, explicit, needle):
    with pytest.raises(ValueError) as e:
        derive_tier(fixtures, explicit)
    assert needle in str(e.value)


def test_the_tier_tables_name_real_fixtures_tiers_and_modules():
    """A renamed fixture or module would silently drop its tests into the unit tier."""
    assert all(hasattr(conftest, name) for name in FIXTURE_TIER)
    assert set(FIXTURE_TIER.values()) | set(MODULE_TIER.values()) <= set(TIERS)
    assert all((REPO / "tests" / f"{module}.py").exists() for module in MODULE_TIER)


def test_every_tier_is_a_registered_marker(pytestconfig):
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert set(TIERS) <= registered
