"""evaluation/fp8_emulation.py: FP8 matmuls as float32 GEMMs give torch._scaled_mm's own results."""
import pytest
import torch

from workflow_scripts.evaluation import fp8_emulation


def _fp8_operands(m=64, k=128, n=96, seed=0):
    """vLLM's layout: activations (m, k) row-major, weights (k, n) column-major (a transposed (n, k))."""
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(m, k, generator=g) * 4).to(torch.float8_e4m3fn)
    b = (torch.randn(n, k, generator=g) * 4).to(torch.float8_e4m3fn).t()
    return a, b


def test_unit_scales_in_float32_give_the_reference_bits():
    """vLLM's channel-wise FP8 kernel on a CPU: unit scales, float32 out, scales applied after."""
    a, b = _fp8_operands()
    one = torch.ones(1)
    reference = torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.float32)
    assert torch.equal(fp8_emulation.scaled_mm(a, b, one, one, out_dtype=torch.float32), reference)


def test_row_and_column_scales_and_bias_match_the_reference():
    a, b = _fp8_operands(seed=1)
    scale_a, scale_b = torch.rand(a.shape[0], 1) + 0.5, torch.rand(1, b.shape[1]) + 0.5
    bias = torch.randn(b.shape[1]).to(torch.bfloat16)
    reference = torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, bias=bias, out_dtype=torch.bfloat16)
    mine = fp8_emulation.scaled_mm(a, b, scale_a, scale_b, bias=bias, out_dtype=torch.bfloat16)
    assert mine.dtype == torch.bfloat16
    # the same products and sums; only where the scales are applied before the bf16 rounding differs
    torch.testing.assert_close(mine.float(), reference.float(), rtol=1e-2, atol=1e-1)


@pytest.fixture
def installed():
    fp8_emulation.install()
    yield
    fp8_emulation._LIBRARY._destroy()  # the CPU kernel torch ships, for the tests after this one
    fp8_emulation._LIBRARY = None


def test_install_routes_torch_scaled_mm_through_the_emulation(installed):
    a, b = _fp8_operands(seed=2)
    one = torch.ones(1)
    # an FP8 output (scale_result) is what only the emulation refuses: proof that it answered
    with pytest.raises(NotImplementedError, match="scale_result"):
        torch._scaled_mm(a, b, scale_a=one, scale_b=one, scale_result=one)
    fp8_emulation.install()  # a second call keeps the one registration
    assert torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.float32).shape == (64, 96)
