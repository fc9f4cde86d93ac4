"""RMSNorm factories vs the float64 reference (forward and backward), lazy compile, fallback."""

from __future__ import annotations

import copy
import warnings

import torch

from conan_core.ops.norms.base import rms_norm_reference
from conan_core.ops.norms.compiled import rms_norm
from conan_core.registries import REGISTRIES

NORMS = REGISTRIES["norms"]


def inputs(seed: int, shape=(3, 5, 32), dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * 3 + 0.5).to(dtype)
    w = 1 + 0.1 * torch.randn(shape[-1], generator=gen)
    return x, w


def check_against_reference(module, x, w, atol):
    with torch.no_grad():
        module.weight.copy_(w)
    x = x.detach().clone().requires_grad_()
    out = module(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * g).sum().backward()
    x64 = x.detach().double().requires_grad_()
    w64 = w.double().requires_grad_()
    ref = rms_norm_reference(x64, w64, module.eps)
    (ref * g.double()).sum().backward()
    assert torch.allclose(out.double(), ref, atol=atol, rtol=atol), (out.double() - ref).abs().max()
    assert torch.allclose(x.grad.double(), x64.grad, atol=atol, rtol=atol)
    assert torch.allclose(module.weight.grad.double(), w64.grad, atol=atol * 10, rtol=atol)


def test_torch_norm_matches_reference_fp32_and_bf16():
    factory = NORMS.build({"type": "torch"})
    x, w = inputs(0)
    check_against_reference(factory.make(32, eps=1e-6), x, w, atol=1e-5)
    xb, _ = inputs(1, dtype=torch.bfloat16)
    with torch.no_grad():
        out = factory.make(32, eps=1e-6).to(torch.bfloat16)(xb)
    assert torch.allclose(out.double(), rms_norm_reference(xb, torch.ones(32), 1e-6), atol=2e-2, rtol=2e-2)


def test_rms_norm_function_matches_reference_in_bf16():
    x, w = inputs(2, dtype=torch.bfloat16)
    out = rms_norm(x, w, 1e-6)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.double(), rms_norm_reference(x, w, 1e-6), atol=2e-2, rtol=2e-2)
    x64 = x.double()
    assert rms_norm(x64, w, 1e-6).dtype == torch.float64  # no silent downcast of float64 inputs
    assert torch.allclose(rms_norm(x64, w, 1e-6), rms_norm_reference(x64, w, 1e-6), atol=1e-12)


def test_compiled_norm_is_lazy_and_matches_reference():
    factory = NORMS.build({"type": "compiled"})
    module = factory.make(32, eps=1e-5)
    assert module.compiled is None  # nothing compiled at construction
    x, w = inputs(3)
    check_against_reference(module, x, w, atol=1e-5)
    assert module.compiled is True
    # same parameters and state dict as nn.RMSNorm
    plain = NORMS.build({"type": "torch"}).make(32, eps=1e-5)
    plain.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert torch.allclose(plain(x), module(x), atol=1e-6)
    assert copy.deepcopy(module)(x).shape == x.shape


def test_compiled_norm_falls_back_to_eager_with_a_warning():
    module = NORMS.build({"type": "compiled", "backend": "no_such_backend"}).make(32)
    x, w = inputs(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_against_reference(module, x, w, atol=1e-5)
    assert module.compiled is False
    assert any("could not compile" in str(c.message) for c in caught)
