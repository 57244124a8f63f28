"""The README is part of the product: its metric table, commands and CI entry point stay true."""

from __future__ import annotations

import re
import sys

from tests.support.servers import REPO


def test_readme_metric_table_is_generated_from_semconv() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import metrics_table
    finally:
        sys.path.pop(0)
    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- metrics-table:start -->\n")[1].split("<!-- metrics-table:end -->")[0]
    assert section == metrics_table.table(), "README metric table is stale: run scripts/metrics_table.py"


def test_readme_gives_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    quickstart = readme.split("## Quickstart")[1].split("##")[0]
    commands = [line for line in re.findall(r"```bash\n(.*?)```", quickstart, re.DOTALL)[0].splitlines()
                if line and not line.startswith("#")]
    assert commands == ['python3 -m venv .venv && .venv/bin/pip install -e ".[cli]" && .venv/bin/qt-telemetry demo',
                        "bash scripts/test.sh"]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["bash scripts/test.sh"], "CI runs exactly the README's test command"


def quickstart_commands() -> list[str]:
    """The Quickstart's commands, as a reader pastes them (tests/unit/test_readme_commands.py runs the first)."""
    quickstart = (REPO / "README.md").read_text().split("## Quickstart")[1].split("\n## ")[0]
    block = re.findall(r"```bash\n(.*?)```", quickstart, re.DOTALL)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_the_first_screen_is_the_two_commands_and_the_ten_line_integration() -> None:
    readme = (REPO / "README.md").read_text()
    first = readme.split("\n## ")[1]
    assert first.startswith("Quickstart") and quickstart_commands() == [
        'python3 -m venv .venv && .venv/bin/pip install -e ".[cli]" && .venv/bin/qt-telemetry demo',
        "bash scripts/test.sh"]
    (integration,) = re.findall(r"```python\n(.*?)```", first, re.DOTALL)
    code = [line for line in integration.splitlines() if line.strip()]
    assert len(code) <= 12 and code[0] == "import qt_telemetry as qt"
    order = readme.index
    assert order("## Quickstart") < order("### 1. Instrument") < order("### 2. The stack") < order("### 3. Drill") \
        < order("# Reference")
    assert "pip install \"qt-telemetry" not in readme  # not on any index: every install is from this clone


def test_readme_settings_table_is_generated_from_the_settings_table() -> None:
    from qt_telemetry._config import settings_table

    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- settings-table:start -->\n")[1].split("<!-- settings-table:end -->")[0]
    assert section == settings_table(), "README settings table is stale: regenerate it from qt_telemetry._config"


def test_readme_shows_a_picture_of_every_dashboard_small_enough_to_load() -> None:
    """docs/dashboards/<uid>.png, drawn by scripts/render_dashboards.py from the running stack's data."""
    readme = (REPO / "README.md").read_text()
    for board in sorted((REPO / "grafana" / "dashboards").glob("*.json")):
        picture = f"docs/dashboards/{board.stem}.png"
        assert f"]({picture})" in readme, f"README does not show {picture}"
        path = REPO / picture
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
        assert path.stat().st_size < 300_000, f"{picture}: {path.stat().st_size} bytes"
