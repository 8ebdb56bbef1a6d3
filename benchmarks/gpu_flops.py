"""Model FLOP utilisation for benchmarks/gpu.py: GPU peak rates and XLA's flop counts."""

from __future__ import annotations

import jax

# Dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets, by a substring of
# `device.device_kind`, first match wins: (bfloat16 tensor core, TF32 tensor core, FP32).
PEAKS = (
    ("H100 PCIe", 756.0, 378.0, 51.2),
    ("H100", 989.0, 494.0, 67.0),  # SXM
    ("H200", 989.0, 494.0, 67.0),  # the H100 SXM's compute with more memory (GH200 too)
    ("A100", 312.0, 156.0, 19.5),
)


def peak_tflops(kind: str, dtype: str, override: list[float] | None) -> tuple[float | None, str]:
    """The peak TFLOP/s a step in `dtype` runs against on a `kind` device, and its name.

    Args:
        kind: `jax.devices()[0].device_kind`, e.g. "NVIDIA H200".
        dtype: "bfloat16" or "float32".
        override: `--peak_tflops` values [bf16, float32] (one value serves both), or None.

    Returns:
        (TFLOP/s or None when unknown, "bf16" | "tf32" | "fp32" | "given").
    """
    if override:
        return (override[0] if dtype == "bfloat16" else override[-1]), "given"
    precision = str(jax.config.jax_default_matmul_precision or "default").lower()
    exact = precision in ("highest", "float32")
    for name, bf16, tf32, fp32 in PEAKS:
        if name.lower() in kind.lower():
            if dtype == "bfloat16":
                return bf16, "bf16"
            return (fp32, "fp32") if exact else (tf32, "tf32")
    return None, ""


def flops(stage) -> float | None:
    """XLA's flop count of a lowered or compiled computation; None when it gives none."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, list | tuple):  # older JAX: one dict per computation
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None
