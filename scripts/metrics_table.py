"""Print the README's metric table from qt_telemetry.semconv (tests check the README matches it)."""

from __future__ import annotations

from qt_telemetry import semconv


def table() -> str:
    rows = ["| OTel name | kind | unit | metric attributes | Prometheus name (via the collector) |",
            "|---|---|---|---|---|"]
    for spec in semconv.METRICS.values():
        attrs = ", ".join(f"`{a}`" for a in spec.attributes) or "—"
        series = (f"`{spec.prometheus}_bucket` (`_sum`, `_count`)" if spec.kind == "histogram"
                  else f"`{spec.prometheus}`")
        rows.append(f"| `{spec.name}` | {spec.kind} | `{spec.unit}` | {attrs} | {series} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table(), end="")
