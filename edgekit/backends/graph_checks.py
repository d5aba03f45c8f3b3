"""Graph patterns more than one converter cannot take, found before any converter runs."""

from __future__ import annotations

from typing import Any


def asymmetric_average_pools(model: Any) -> list[str]:
    """AveragePool nodes whose pads differ at the begin and end of an axis (Inception v1's last pool: pads 0, 0, 1, 1)."""
    found = []
    for node in model.graph.node:
        pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [])
        if node.op_type == "AveragePool" and pads and pads[: len(pads) // 2] != pads[len(pads) // 2 :]:
            found.append(node.name or "<unnamed>")
    return found
