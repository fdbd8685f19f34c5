"""m3lit.model.onednn_linear: values and gradients equal a naive x W^T + b, the fallback elsewhere, the swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from m3lit.model import M3Model
from m3lit.model.onednn_linear import OneDnnLinear, enabled, use_onednn_linear

pytestmark = pytest.mark.skipif(not enabled(), reason="torch built without oneDNN")


def _layer(bias: bool) -> OneDnnLinear:
    torch.manual_seed(0)
    layer = nn.Linear(24, 40, bias=bias)
    layer.__class__ = OneDnnLinear
    return layer


@pytest.mark.parametrize("shape", [(7, 24), (3, 5, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_the_naive_product(shape, bias):
    layer = _layer(bias)
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(*shape[:-1], 40)
    y = layer(x)
    loss = (y * weight).sum()
    grads = torch.autograd.grad(loss, [x, layer.weight] + ([layer.bias] if bias else []))
    # the reference in float64, from the formula y = x W^T + b
    x64, w64 = x.detach().double().requires_grad_(), layer.weight.detach().double().requires_grad_()
    b64 = layer.bias.detach().double().requires_grad_() if bias else None
    y64 = x64 @ w64.T + (b64 if bias else 0)
    expected = torch.autograd.grad((y64 * weight.double()).sum(), [x64, w64] + ([b64] if bias else []))
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected, strict=True):
        assert got.dtype == torch.float32 and got.is_contiguous()
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)


def test_only_the_needed_gradients_and_frozen_weights():
    layer = _layer(True)
    layer.weight.requires_grad_(False)
    x = torch.randn(6, 24, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is not None and x.grad is not None
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(6, -1), rtol=1e-5, atol=1e-5)


def test_other_inputs_take_the_plain_linear():
    layer = _layer(True)
    x = torch.randn(24)  # 1-D
    assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    layer = _layer(True).double()
    x = torch.randn(4, 24, dtype=torch.float64)
    assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_m3_model_swaps_every_plain_linear_and_keeps_its_state(tiny_config, tokenizer, monkeypatch):
    torch.manual_seed(0)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is OneDnnLinear for m in linears)
    monkeypatch.setenv("M3LIT_ONEDNN_LINEAR", "0")
    torch.manual_seed(0)
    plain = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16)
    assert all(type(m) is nn.Linear for m in plain.modules() if isinstance(m, nn.Linear))
    assert model.state_dict().keys() == plain.state_dict().keys()
    ids = torch.tensor([[0, 7, 9, 2], [0, 8, 2, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        a, b = model.eval()(ids, mask), plain.eval()(ids, mask)
    torch.testing.assert_close(a.dense, b.dense, rtol=1e-5, atol=1e-6)
    assert use_onednn_linear(nn.Sequential(nn.Linear(2, 2)))[0].__class__ is nn.Linear  # switched off
