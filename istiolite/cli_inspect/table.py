"""Plain-text tables, aligned as kubectl and istioctl print them."""

from __future__ import annotations

from collections.abc import Sequence

GAP = "   "


def render(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append(GAP.join(padded).rstrip())
    return "\n".join(lines)
