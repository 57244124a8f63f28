"""Draw each shipped Grafana dashboard from its own panel queries against a running stack: docs/dashboards/*.png.

The Grafana the tests build has neither its web UI nor the image renderer, so the README's pictures are drawn
here instead: every panel of grafana/dashboards/<name>.json in its grid place, with its title and unit, from the
panel's PromQL (variables on "All", Grafana's interval macros resolved as Grafana would for the picture's step)
run through Prometheus's HTTP API over the chosen time range; exemplars as diamonds and the dashboard's annotations
as shaded regions on the panels they name.

    pip install -e ".[docs]"
    python scripts/render_dashboards.py --prometheus-url http://localhost:9090 --minutes 15   # docker compose up
    python scripts/render_dashboards.py --with-stack 12   # the tests' stack and bots on loopback, 12 min of data
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402 - the backend is chosen first
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from PIL import Image  # noqa: E402 - matplotlib's own dependency

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "grafana" / "dashboards"
OUT = REPO / "docs" / "dashboards"
#: Grafana's row unit is 30 px on a 24-column grid about 1,900 px wide; here one column is 0.75 in, one row 0.32 in.
COLUMN_IN, ROW_IN, DPI = 0.75, 0.32, 72
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0", "#508642",
           "#cca300", "#447ebc", "#c15c17"]
COLORS = {"green": "#56a64b", "red": "#e02f44", "orange": "#ff9830", "yellow": "#fade2a"}


# --- Prometheus ---------------------------------------------------------------------------------------------

class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=60) as response:
            reply = json.loads(response.read())
        if reply.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} {params}: {reply}")
        return reply["data"]

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)["result"])

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", query=expr, time=at)["result"])

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query_exemplars", query=expr, start=start, end=end))


def promql(expr: str, step: float) -> str:
    """A panel query as Grafana sends it for this picture: variables on "All" (.*), $__rate_interval as Grafana
    computes it with the datasource's 15 s scrape interval (max(step + 15 s, 60 s)), $__interval the step."""
    rate_interval = max(step + 15, 60)
    expr = re.sub(r"\$__rate_interval\b", f"{int(rate_interval)}s", expr)
    expr = re.sub(r"\$__(interval|range)\b", f"{int(step)}s", expr)
    return re.sub(r"\$\{?[a-z_]+\}?", ".*", expr)


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")
    return " ".join(text.split()) or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__")


# --- units --------------------------------------------------------------------------------------------------

def formatter(unit: str | None) -> Any:
    def fmt(value: float, _pos: Any = None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if unit == "s":
            magnitude = abs(value)
            if magnitude == 0:
                return "0 s"
            if magnitude < 1e-3:
                return f"{value * 1e6:.3g} µs"
            if magnitude < 1:
                return f"{value * 1e3:.3g} ms"
            return f"{value:.3g} s"
        if unit == "percentunit":
            return f"{value * 100:.3g}%"
        if unit == "currencyUSD":
            return f"${value:,.0f}" if abs(value) >= 100 else f"${value:.2f}"
        if unit == "ops":
            return f"{value:.3g}/s"
        if unit and unit.startswith("suffix:"):
            return f"{value:.3g} {unit.split(':', 1)[1].strip()}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return fmt


def mapped(value: float, mappings: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(text, colour) of a value mapping, as a stat or state-timeline panel shows it."""
    for mapping in mappings:
        for key, option in mapping.get("options", {}).items():
            if math.isclose(float(key), value):
                return option.get("text", key), COLORS.get(option.get("color", ""), option.get("color", "grey"))
    return None


def threshold_colour(value: float, defaults: dict[str, Any]) -> str:
    colour = "green"
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            colour = step["color"]
    return COLORS.get(colour, colour)


# --- panels -------------------------------------------------------------------------------------------------

class Painter:
    def __init__(self, prometheus: Prometheus, start: float, end: float) -> None:
        self.prometheus, self.start, self.end = prometheus, start, end
        self.step = max(15.0, round((end - start) / 240))
        self.colours: dict[str, str] = {}  # one colour per series name, the same in every copy of a repeated panel

    def colour(self, name: str) -> str:
        return self.colours.setdefault(name, PALETTE[len(self.colours) % len(PALETTE)])

    def series(self, panel: dict[str, Any]
               ) -> Iterator[tuple[dict[str, Any], dict[str, str], list[float], list[float]]]:
        """(target, labels, times, values) of every series of every target."""
        for target in panel["targets"]:
            for result in self.prometheus.range(promql(target["expr"], self.step), self.start, self.end, self.step):
                points = [(float(t), float(v)) for t, v in result["values"] if not math.isnan(float(v))]
                if points:
                    times, values = zip(*points)
                    yield target, result["metric"], list(times), list(values)

    def draw(self, ax: Axes, panel: dict[str, Any], regions: list[tuple[float, float, str]]) -> None:
        kind = panel["type"]
        # a repeated panel's "$venue" in its title names the copy: each copy is titled below
        ax.set_title(re.sub(r"\s*\(\$\w+\)", "", panel["title"]), loc="left", fontsize=10, color="#d8d9da", pad=4)
        self.colours = {}
        if kind == "stat":
            self.stat(ax, panel)
        elif kind == "bargauge":
            self.bargauge(ax, panel)
        elif kind == "state-timeline":
            self.timeline(ax, panel)
        elif kind == "heatmap":
            self.heatmap(ax, panel)
        elif panel.get("repeat"):
            self.repeated(ax, panel, regions)
        else:
            self.timeseries(ax, panel, regions)

    def _time_axis(self, ax: Axes) -> None:
        ax.set_xlim(datetime.fromtimestamp(self.start, timezone.utc), datetime.fromtimestamp(self.end, timezone.utc))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))
        ax.xaxis.set_major_locator(mdates.MinuteLocator(byminute=range(0, 60, 5)))

    def timeseries(self, ax: Axes, panel: dict[str, Any], regions: list[tuple[float, float, str]],
                   only: dict[str, str] | None = None) -> None:
        defaults = panel["fieldConfig"]["defaults"]
        custom = defaults.get("custom", {})
        stacked = custom.get("stacking", {}).get("mode") == "normal"
        bars = custom.get("drawStyle") == "bars"
        overrides = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
                     for o in panel["fieldConfig"].get("overrides", []) if o["matcher"]["id"] == "byFrameRefID"}
        right: Axes | None = None
        base: dict[str, dict[float, float]] = {}
        drawn = 0
        for target, labels, times, values in self.series(panel):
            if only and any(labels.get(k) != v for k, v in only.items()):
                continue
            override = overrides.get(target["refId"], {})
            axis = ax
            if override.get("custom.axisPlacement") == "right":
                right = right or ax.twinx()
                axis = right
                axis.yaxis.set_major_formatter(FuncFormatter(formatter(override.get("unit"))))
                axis.tick_params(colors="#9fa7b3", labelsize=7)
            when = [datetime.fromtimestamp(t, timezone.utc) for t in times]
            name = legend(target.get("legendFormat", ""), labels)
            colour = self.colour(name)
            group = override.get("custom.stacking", custom.get("stacking", {})).get("group", "A") if stacked else ""
            if stacked and override.get("custom.stacking", {}).get("mode", "normal") == "normal":
                floor = base.setdefault(group, {})
                lows = [floor.get(t, 0.0) for t in times]
                highs = [low + v for low, v in zip(lows, values)]
                floor.update(zip(times, highs))
                axis.fill_between(when, lows, highs, step="mid", alpha=0.55, color=colour, linewidth=0, label=name)
            elif bars or override.get("custom.drawStyle") == "bars":
                axis.bar(when, values, width=self.step / 86400 * 0.6, color=colour,
                         alpha=0.45 if axis is not ax else 0.8, label=name)
            else:
                dashed = override.get("custom.lineStyle", {}).get("fill") == "dash"
                axis.plot(when, values, color=colour, linewidth=1.3, label=name, linestyle="--" if dashed else "-")
            drawn += 1
        if any(t.get("exemplar") for t in panel["targets"]):
            self.exemplars(ax, panel, only)
        for start, end, colour in regions:  # faint, as Grafana draws a region; its start marked on the axis
            ax.axvspan(datetime.fromtimestamp(start, timezone.utc), datetime.fromtimestamp(end, timezone.utc),
                       color=colour, alpha=0.06, linewidth=0)
            ax.axvline(datetime.fromtimestamp(start, timezone.utc), ymax=0.04, color=colour, linewidth=2)
        for step in defaults.get("thresholds", {}).get("steps", [])[1:]:
            if custom.get("thresholdsStyle"):
                ax.axhline(step["value"], color=COLORS.get(step["color"], step["color"]), linewidth=0.8,
                           linestyle=":")
        self._time_axis(ax)
        ax.yaxis.set_major_formatter(FuncFormatter(formatter(defaults.get("unit"))))
        if drawn:
            handles, names = ax.get_legend_handles_labels()
            if right is not None:
                more = right.get_legend_handles_labels()
                handles, names = handles + more[0], names + more[1]
            ax.legend(handles[:10], names[:10], fontsize=6.5, loc="upper left", ncol=2 if len(names) > 5 else 1,
                      frameon=False, labelcolor="#c7d0d9")
        else:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color="#9fa7b3")

    def repeated(self, ax: Axes, panel: dict[str, Any], regions: list[tuple[float, float, str]]) -> None:
        """A panel Grafana repeats per value of a variable: one small chart per value found, side by side."""
        label = panel["repeat"]
        values = sorted({labels.get(label, "") for _, labels, _, _ in self.series(panel)} - {""})
        ax.axis("off")
        if not values:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color="#9fa7b3")
            return
        box = ax.get_position()
        figure = ax.figure
        width = box.width / len(values)
        for i, value in enumerate(values):
            sub = figure.add_axes((box.x0 + i * width + 0.02 * width, box.y0, width * 0.95, box.height * 0.92))
            style(sub)
            self.timeseries(sub, panel, regions, only={label: value})
            sub.set_title(f"{label} = {value}", loc="left", fontsize=8.5, color="#9fa7b3", pad=2)

    def exemplars(self, ax: Axes, panel: dict[str, Any], only: dict[str, str] | None) -> None:
        times, values = [], []
        for target in panel["targets"]:
            for series in self.prometheus.exemplars(promql(target["expr"], self.step), self.start, self.end):
                if only and any(series["seriesLabels"].get(k) != v for k, v in only.items()):
                    continue
                for exemplar in series["exemplars"]:
                    times.append(datetime.fromtimestamp(float(exemplar["timestamp"]), timezone.utc))
                    values.append(float(exemplar["value"]))
        if len(times) > 150:  # a sample of them, evenly: thousands of diamonds hide the lines
            times, values = times[:: len(times) // 150], values[:: len(values) // 150]
        if times:
            ax.scatter(times, values, marker="D", s=6, color="#ff00ff", alpha=0.35, linewidths=0, label="exemplars",
                       zorder=5)

    def stat(self, ax: Axes, panel: dict[str, Any]) -> None:
        defaults = panel["fieldConfig"]["defaults"]
        rows = [(legend(t.get("legendFormat", ""), r["metric"]), float(r["value"][1]))
                for t in panel["targets"] for r in self.prometheus.instant(promql(t["expr"], self.step), self.end)]
        ax.axis("off")
        if not rows:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color="#9fa7b3")
            return
        rows = rows[:8]
        for i, (name, value) in enumerate(rows):
            shown = mapped(value, defaults.get("mappings", []))
            text, colour = shown or (formatter(defaults.get("unit"))(value), threshold_colour(value, defaults))
            x = (i + 0.5) / len(rows)
            ax.text(x, 0.42, text, transform=ax.transAxes, ha="center", fontsize=15 if len(rows) < 4 else 11,
                    color=colour, weight="bold")
            ax.text(x, 0.12, name, transform=ax.transAxes, ha="center", fontsize=7, color="#9fa7b3")

    def bargauge(self, ax: Axes, panel: dict[str, Any]) -> None:
        defaults = panel["fieldConfig"]["defaults"]
        rows = sorted(((legend(t.get("legendFormat", ""), r["metric"]), float(r["value"][1]))
                       for t in panel["targets"] for r in self.prometheus.instant(promql(t["expr"], self.step),
                                                                                  self.end)), key=lambda r: r[1])
        if not rows:
            ax.axis("off")
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color="#9fa7b3")
            return
        names, values = zip(*rows)
        ax.barh(range(len(rows)), values, color=PALETTE[0], height=0.7)
        ax.set_yticks([])
        for i, name in enumerate(names):  # the bar's name on the bar, as Grafana writes it
            ax.text(0, i, f" {name}", va="center", fontsize=7, color="#111217", weight="bold")
        ax.xaxis.set_major_formatter(FuncFormatter(formatter(defaults.get("unit"))))

    def timeline(self, ax: Axes, panel: dict[str, Any]) -> None:
        mappings = panel["fieldConfig"]["defaults"].get("mappings", [])
        rows = list(self.series(panel))
        for i, (_, _, times, values) in enumerate(rows):
            for t, v in zip(times, values):
                shown = mapped(v, mappings)
                ax.barh(i, self.step / 86400, left=mdates.date2num(datetime.fromtimestamp(t - self.step / 2,
                                                                                          timezone.utc)),
                        color=shown[1] if shown else "grey", height=0.8, linewidth=0)
        ax.set_yticks([])
        for i, (target, labels, _, _) in enumerate(rows):  # row names inside the chart, as Grafana writes them
            ax.text(0.005, i, legend(target.get("legendFormat", ""), labels), transform=ax.get_yaxis_transform(),
                    va="center", fontsize=7, color="#111217", weight="bold")
        self._time_axis(ax)
        if not rows:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color="#9fa7b3")

    def heatmap(self, ax: Axes, panel: dict[str, Any]) -> None:
        buckets: dict[float, dict[float, float]] = {}
        for _, labels, times, values in self.series(panel):
            if "le" in labels:
                buckets[float(labels["le"])] = dict(zip(times, values))
        if not buckets:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", color="#9fa7b3")
            return
        bounds = sorted(buckets)
        times = sorted({t for column in buckets.values() for t in column})
        grid = []
        for lower, upper in zip([0.0, *bounds], bounds):  # cumulative buckets -> per-bucket counts
            grid.append([buckets[upper].get(t, 0.0) - (buckets.get(lower, {}).get(t, 0.0) if lower else 0.0)
                         for t in times])
        when = mdates.date2num([datetime.fromtimestamp(t, timezone.utc) for t in times])
        ax.pcolormesh(when, [i + 0.5 for i in range(len(bounds))], grid, cmap="inferno", shading="nearest",
                      norm=matplotlib.colors.PowerNorm(0.35))
        labels = [formatter("s")(b) if math.isfinite(b) else "+Inf" for b in bounds]
        ax.set_yticks([i + 0.5 for i in range(len(bounds))][::2], labels[::2], fontsize=7)
        self._time_axis(ax)


def style(ax: Axes) -> None:
    ax.set_facecolor("#181b1f")
    ax.tick_params(colors="#9fa7b3", labelsize=7)
    for spine in ax.spines.values():
        spine.set_color("#2c3235")
    ax.grid(color="#2c3235", linewidth=0.5)


def annotation_regions(prometheus: Prometheus, board: dict[str, Any], start: float,
                       end: float) -> dict[int, list[tuple[float, float, str]]]:
    """Panel id -> (start, end, colour) of each annotation region: the non-zero steps of the annotation's query,
    consecutive steps joined, as Grafana's Prometheus annotations do."""
    out: dict[int, list[tuple[float, float, str]]] = {}
    for annotation in board.get("annotations", {}).get("list", []):
        step = float(annotation.get("step", "15s").rstrip("s"))
        colour = COLORS.get(annotation.get("iconColor", "red"), "#e02f44")
        for series in prometheus.range(promql(annotation["expr"], step), start, end, step):
            region: list[float] = []
            for t, v in ((float(t), float(v)) for t, v in series["values"]):
                if v and region and t - region[1] <= step:
                    region[1] = t
                elif v:
                    if region:
                        for panel in annotation["filter"]["ids"]:
                            out.setdefault(panel, []).append((region[0], region[1] + step, colour))
                    region = [t, t]
            if region:
                for panel in annotation["filter"]["ids"]:
                    out.setdefault(panel, []).append((region[0], region[1] + step, colour))
    return out


def render(board: dict[str, Any], prometheus: Prometheus, start: float, end: float, out: Path) -> Path:
    painter = Painter(prometheus, start, end)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    figure = plt.figure(figsize=(24 * COLUMN_IN, rows * ROW_IN + 0.6), facecolor="#111217")
    height = rows * ROW_IN + 0.6
    figure.text(0.01, 1 - 0.3 / height, f"{board['title']}  ·  {datetime.fromtimestamp(start, timezone.utc):%H:%M}–"
                f"{datetime.fromtimestamp(end, timezone.utc):%H:%M} UTC  ·  drawn from the panels' queries",
                color="#d8d9da", fontsize=12, va="center")
    regions = annotation_regions(prometheus, board, start, end)
    for panel in board["panels"]:
        grid = panel["gridPos"]
        left, width = grid["x"] / 24, grid["w"] / 24
        top = (0.6 + grid["y"] * ROW_IN) / height
        margin = 0.65 / (24 * COLUMN_IN)  # room for the y-axis labels, in figure widths
        box = (left + margin, 1 - top - (grid["h"] * ROW_IN) / height + 0.45 / height,
               width - margin - 0.01, (grid["h"] * ROW_IN - 0.75) / height)
        ax = figure.add_axes(box)
        style(ax)
        try:
            painter.draw(ax, panel, regions.get(panel["id"], []))
        except Exception as exc:  # noqa: BLE001 - one panel's failure is drawn on the panel, the others still come
            ax.text(0.5, 0.5, f"query failed: {exc}"[:120], transform=ax.transAxes, ha="center", color="#e02f44",
                    fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, facecolor=figure.get_facecolor())
    plt.close(figure)
    buffer.seek(0)
    path = out / f"{board['uid'].removeprefix('qt-')}.png"
    # an adaptive palette keeps a dashboard picture well under 300 KB
    Image.open(buffer).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


# --- a stack of our own -------------------------------------------------------------------------------------

@contextlib.contextmanager
def test_stack(minutes: float) -> Iterator[str]:
    """The tests' stack (tests/e2e/stack.py: the real Collector, Prometheus, Tempo, Alertmanager on loopback) with
    the tests' bots: one trading live (kill switch, breaker and feed flipping on a clock), one dropping spans, and
    short runs of the others; yields Prometheus's URL once ``minutes`` of data are in."""
    import subprocess
    import tempfile

    sys.path.insert(0, str(REPO))
    from tests.e2e.conftest import bot_env, run_workload
    from tests.e2e.stack import Stack

    with tempfile.TemporaryDirectory(prefix="qt-render-") as tmp:
        stack = Stack(Path(tmp))
        bots: list[subprocess.Popen[str]] = []
        try:
            stack.start()
            for service, args, env in (("live-bot", ["--forever"], {}),
                                       ("lossy-bot", ["--flood"], {"OTEL_BSP_MAX_QUEUE_SIZE": "4",
                                                                   "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4",
                                                                   "OTEL_BSP_SCHEDULE_DELAY": "2000"})):
                bots.append(subprocess.Popen([sys.executable, "-m", "tests.e2e.workload", *args], cwd=REPO,
                                             env={**bot_env(stack, service), **env}, stdin=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
            run_workload(stack, "halted-bot", "--trades", "3", "--kill-switch")
            print(f"stack up, bots trading; drawing in {minutes:g} min", file=sys.stderr)
            time.sleep(minutes * 60)
            yield stack.prometheus_url
        finally:
            for bot in bots:
                if bot.stdin:
                    bot.stdin.close()
                bot.wait(timeout=30)
            stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus-url", default="http://localhost:9090")
    parser.add_argument("--minutes", type=float, default=15, help="time range drawn, ending now")
    parser.add_argument("--with-stack", type=float, metavar="MINUTES",
                        help="start the tests' stack and bots, let them run MINUTES, draw those minutes")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("dashboards", nargs="*", help="file names in grafana/dashboards (default: all)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.dashboards or sorted(p.name for p in DASHBOARDS.glob("*.json"))
    with (test_stack(args.with_stack) if args.with_stack else contextlib.nullcontext(args.prometheus_url)) as url:
        minutes = args.with_stack or args.minutes
        end = time.time()
        for name in names:
            board = json.loads((DASHBOARDS / name).read_text())
            path = render(board, Prometheus(url), end - minutes * 60, end, args.out)
            print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
