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
    assert commands == ['python3 -m pip install -e ".[cli]" && python3 -m qt_telemetry demo', "bash scripts/test.sh"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_readme_settings_table_is_generated_from_the_settings_table() -> None:
    from qt_telemetry._config import settings_table

    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- settings-table:start -->\n")[1].split("<!-- settings-table:end -->")[0]
    assert section == settings_table(), "README settings table is stale: regenerate it from qt_telemetry._config"
