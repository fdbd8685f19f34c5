"""fp32 GEMM rate of the three CPU backends at the encoder's shapes: torch's BLAS, oneDNN, ONNX Runtime.

    python -m benchmarks.gemm_backends [--quick] [--runs N] [--rows M]

For each linear-layer shape of multilingual-e5-small (hidden 384, FFN 1536) at ``--rows`` token rows
(default 4096: a 16 x 4 x 64-token stage-2 step): ``y = x W^T + b`` by

* ``torch blas``: ``F.linear`` (``addmm``, the BLAS torch was built with; MKL in the pip wheels);
* ``onednn``: ``torch.ops.mkldnn._linear_pointwise``, what :class:`m3lit.model.onednn_linear.OneDnnLinear` calls;
* ``onnxruntime``: a one-node ``Gemm`` graph in ONNX Runtime's CPU provider (MLAS), 2 intra-op threads, when
  ``onnxruntime`` is installed (``m3lit[onnx]``).

One process, the backends alternating within each round (the order reversed every other round); each entry is
the best of 10 products after a warm-up, in GFLOP/s (2 M K N per product). Also the two backward products of
:class:`~m3lit.model.onednn_linear.OneDnnLinear` (``dx = dy W`` and ``dW = dy^T x``) against torch's ``mm``.
Prints the table and the oneDNN / BLAS ratio per shape; writes ``bench_results/gemm_backends.json``.
"""

from __future__ import annotations

import time

from benchmarks import harness as H

__all__ = ["SHAPES", "run", "main"]

#: (name, K, N) of the encoder's linear layers: attention projections, FFN in, FFN out.
SHAPES = (("qkv/out 384->384", 384, 384), ("ffn in 384->1536", 384, 1536), ("ffn out 1536->384", 1536, 384))


def _rate(fn, flop: float, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return flop / best / 1e9


def _ort_gemm(weight, bias):
    """A run function of a one-node Gemm graph (y = x W^T + b) in ONNX Runtime, or None without it."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    inits = [numpy_helper.from_array(weight.numpy(), "W"), numpy_helper.from_array(bias.numpy(), "B")]
    node = helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)
    graph = helper.make_graph(
        [node], "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", weight.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", weight.shape[0]])], inits,
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})


def _sides(x, weight, bias, grad) -> dict:
    """Backend name -> a function computing one product of this shape."""
    import torch.nn.functional as F

    from m3lit.model.onednn_linear import onednn_product as onednn

    sides = {
        "torch blas": lambda: F.linear(x, weight, bias),
        "onednn": lambda: onednn(x, weight, bias),
        "torch mm dx": lambda: grad @ weight,
        "onednn dx": lambda: onednn(grad, weight.t().contiguous()),
        "torch mm dW": lambda: grad.t() @ x,
        "onednn dW": lambda: onednn(x.t().contiguous(), grad.t().contiguous()).t(),
    }
    ort_run, x_np = _ort_gemm(weight, bias), x.numpy()
    if ort_run is not None:
        sides["onnxruntime"] = lambda: ort_run(x_np)
    return sides


def run(quick: bool = False, runs: int | None = None, rows: int = 4096) -> dict:
    """Alternate the backends per shape ``runs`` times; print and save the table."""
    import torch

    runs = runs or (1 if quick else 3)
    repeat = 3 if quick else 10
    torch.manual_seed(0)
    results: dict[str, dict[str, list[float]]] = {}
    for name, k, n in SHAPES:
        x, weight, bias = torch.randn(rows, k), torch.randn(n, k), torch.randn(n)
        grad = torch.randn(rows, n)
        flop = 2.0 * rows * k * n
        sides = _sides(x, weight, bias, grad)
        rates: dict[str, list[float]] = {side: [] for side in sides}
        with torch.no_grad():
            for r in range(runs):
                for side in list(sides)[:: 1 if r % 2 == 0 else -1]:
                    rates[side].append(_rate(sides[side], flop, repeat))
        results[name] = rates
    rows_out = []
    for name, rates in results.items():
        best = {side: max(values) for side, values in rates.items()}
        rows_out.append([
            name, f"{best['torch blas']:.1f}", f"{best['onednn']:.1f}",
            f"{best['onnxruntime']:.1f}" if "onnxruntime" in best else "n/a",
            f"{best['onednn'] / best['torch blas']:.2f}x",
            f"{best['torch mm dx']:.1f} / {best['onednn dx']:.1f}", f"{best['torch mm dW']:.1f} / {best['onednn dW']:.1f}",
        ])  # fmt: skip
    print(f"\n### gemm_backends (fp32 GFLOP/s, best of {runs} alternated rounds, {rows} token rows)")
    headers = [
        "shape",
        "torch blas",
        "onednn",
        "onnxruntime",
        "onednn / blas",
        "dx: mm / onednn",
        "dW: mm / onednn",
    ]
    print(H.format_table(headers, rows_out))
    payload = {"benchmark": "gemm_backends", "quick": quick, "rows": rows, "env": H.environment(False),
               "results": results}  # fmt: skip
    H.save_json("gemm_backends", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="token rows per product (default 4096)")
    args = parser.parse_args(argv)
    run(args.quick, args.runs, args.rows)


if __name__ == "__main__":
    main()
