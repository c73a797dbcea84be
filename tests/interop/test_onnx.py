"""ONNX export: the conv form is one Conv node where the slice form is Slice + Concat.

That is the deployment reason for the conv form: TensorRT cannot parse the Unfold graph
(mmdeploy rewrites it as slices), while a Conv(k=2, s=2) is its most basic op.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from pm_core import Norm, PatchMerging

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.models


def _export(m: torch.nn.Module, x: torch.Tensor) -> bytes:
    """The serialized ONNX model (what exporting to a BytesIO, now deprecated, wrote)."""
    program = torch.onnx.export(
        m, (x,), dynamo=True, verbose=False, input_names=["x"], output_names=["y"]
    )
    assert program is not None
    data: bytes = program.model_proto.SerializeToString()
    return data


def _ops(model_bytes: bytes) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in onnx.load_from_string(model_bytes).graph.node)


def _run(model_bytes: bytes, x: torch.Tensor) -> torch.Tensor:
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])


@pytest.mark.parametrize("norm", ["none", "post", "pre"])
def test_onnx_conv_vs_slice(norm: Norm) -> None:
    """The conv export holds one Conv and no Slice/Concat; the slice export the reverse;
    onnxruntime runs both to the same outputs (float32: each within a few ulps of the
    exact result; 1e-4 relative to the output scale leaves 100x headroom over the K=384
    dot-product bound and is still 1e4x below a layout error)."""
    torch.manual_seed(0)
    conv = PatchMerging(96, norm=norm, impl="conv").eval()
    if norm != "none":
        assert isinstance(conv.norm, nn.LayerNorm)
        torch.nn.init.normal_(conv.norm.weight)
        torch.nn.init.normal_(conv.norm.bias)
    slc = PatchMerging(96, norm=norm, impl="slice").eval()
    slc.load_state_dict(conv.state_dict())
    x = torch.randn(1, 56, 56, 96)
    g_conv, g_slice = _export(conv, x), _export(slc, x)
    ops_conv, ops_slice = _ops(g_conv), _ops(g_slice)
    assert (ops_conv["Conv"], ops_conv["Slice"], ops_conv["Concat"]) == (1, 0, 0), ops_conv
    assert (ops_slice["Conv"], ops_slice["Concat"]) == (0, 1), ops_slice
    assert ops_slice["Slice"] >= 4, ops_slice
    if norm == "none":
        assert sum(ops_conv.values()) < sum(ops_slice.values())
    with torch.no_grad():
        want = slc(x)
    y_conv, y_slice = _run(g_conv, x), _run(g_slice, x)
    scale = want.abs().max().item()
    torch.testing.assert_close(y_conv, want, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(y_slice, want, rtol=0, atol=1e-4 * scale)
