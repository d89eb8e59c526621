#!/usr/bin/env python
"""Where speculative decoding stops paying: TPOT speedup against load, per acceptance rate.

    PYTHONPATH=src python scripts/speculative_crossover.py            # writes the SVG
    PYTHONPATH=src python scripts/speculative_crossover.py --table    # also prints a table

Runs Llama-3.1-8B on one H100 (roofline latency model), 256-token prompts and 512-token
outputs, at several request rates, without speculation and with EAGLE (k = 3) at
several acceptance rates, and plots mean TPOT without / mean TPOT with (above 1:
speculation helps). Writes docs/speculative-crossover.svg. About a minute on one core.
"""

from __future__ import annotations

import argparse
import os
import sys
from html import escape

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from inference_sim import simulate  # noqa: E402

RATES = (2.0, 25.0, 50.0, 100.0, 200.0, 300.0)
ALPHAS = (0.2, 0.4, 0.6, 0.8)
K = 3
COLORS = ("#d62728", "#ff7f0e", "#2ca02c", "#1f77b4")
BASE = {
    "model": "meta-llama/llama-3.1-8b-instruct",
    "hardware": "H100",
    "tp": 1,
    "latency_model": "roofline",
    "prompt_tokens": 256,
    "output_tokens": 512,
    "num_requests": 600,
    "seed": 1,
}


def tpot(rate: float, **extra: object) -> float:
    res = simulate(**BASE, rate=rate, **extra)
    return float(res.summary["tpot_mean_ms"])


def measure() -> dict[float, list[float]]:
    """Speedup (TPOT without / with) per acceptance rate, one value per rate in RATES."""
    base = [tpot(r) for r in RATES]
    out: dict[float, list[float]] = {}
    for a in ALPHAS:
        spec = dict(speculative_method="eagle", num_speculative_tokens=K, spec_acceptance_rate=a)
        out[a] = [b / tpot(r, **spec) for r, b in zip(RATES, base, strict=True)]
    return out


def svg(speedups: dict[float, list[float]], width: int = 640, height: int = 340) -> str:
    left, right, top, bottom = 56, 120, 34, 44
    pw, ph = width - left - right, height - top - bottom
    x1 = max(RATES)
    y1 = max(4.0, max(max(v) for v in speedups.values()))

    def px(x: float) -> float:
        return left + x / x1 * pw

    def py(y: float) -> float:
        return top + ph - y / y1 * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="18" font-size="13">'
        + escape(f"EAGLE k={K}: TPOT speedup vs load (Llama-3.1-8B, H100, roofline)")
        + "</text>",
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    y = 0.0
    while y <= y1 + 1e-9:
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += 1.0
    for r in RATES:
        out.append(f'<text x="{px(r):.1f}" y="{top + ph + 16}" text-anchor="middle">{r:g}</text>')
    out.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{py(1):.1f}" y2="{py(1):.1f}" '
        'stroke="#444" stroke-dasharray="5,4"/>'
    )
    ly = top + 14 + 18 * len(speedups)
    out.append(
        f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" '
        'stroke="#444" stroke-dasharray="5,4"/>'
    )
    out.append(f'<text x="{left + pw + 36}" y="{ly + 4}">no gain</text>')
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">'
        "request rate (req/s)</text>"
    )
    out.append(
        f'<text transform="translate(16,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
        "TPOT without / with speculation</text>"
    )
    for i, (a, ys) in enumerate(speedups.items()):
        color = COLORS[i % len(COLORS)]
        pts = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in zip(RATES, ys, strict=True))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, v in zip(RATES, ys, strict=True):
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
        ly = top + 14 + 18 * i
        out.append(
            f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        out.append(f'<text x="{left + pw + 36}" y="{ly + 4}">acceptance {a:g}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "speculative-crossover.svg"))
    ap.add_argument("--table", action="store_true", help="print the speedups as a table")
    args = ap.parse_args()
    speedups = measure()
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(svg(speedups))
    if args.table:
        print("| acceptance | " + " | ".join(f"{r:g} req/s" for r in RATES) + " |")
        print("|---" * (len(RATES) + 1) + "|")
        for a, ys in speedups.items():
            print(f"| {a:g} | " + " | ".join(f"{v:.2f}" for v in ys) + " |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
