"""The suite builds and installs only what the selected tests use (tests/support/servers.py).

One collection of the whole suite (no test runs, nothing is built) reports what each test declares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.fleet.harness import Fleet
from tests.e2e.stack import Stack
from tests.support import servers
from tests.support.servers import REPO

PLUGIN = '''
import json

def pytest_collection_finish(session):
    from tests.support import servers
    print("DECLARED " + json.dumps({item.nodeid: sorted(servers.declared([item])) for item in session.items}))
'''


@pytest.fixture(scope="module")
def declared_by_test(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    plugin_dir = tmp_path_factory.mktemp("plugin")
    (plugin_dir / "declared_servers.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "declared_servers",
                           "-p", "no:cacheprovider", "tests"],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("DECLARED "))
    return {nodeid: set(names) for nodeid, names in json.loads(line.removeprefix("DECLARED ")).items()}


def _union(declared_by_test: dict[str, set[str]], prefix: str, excluding: str = "\0") -> set[str]:
    selected = [names for nodeid, names in declared_by_test.items()
                if nodeid.startswith(prefix) and not nodeid.startswith(excluding)]
    assert selected, f"no test collected under {prefix}"
    return set().union(*selected)


def test_unit_tests_without_the_stack_config_checks_need_no_server_and_no_debian_tool(
        declared_by_test: dict[str, set[str]]) -> None:
    assert _union(declared_by_test, "tests/unit/", excluding="tests/unit/test_stack_configs.py") == set()


def test_the_whole_suite_builds_every_server_and_installs_every_tool(declared_by_test: dict[str, set[str]]) -> None:
    assert _union(declared_by_test, "tests/") == set(servers.NAMES)


def test_every_end_to_end_test_gets_its_servers_and_only_grafana_tests_get_grafana(
        declared_by_test: dict[str, set[str]]) -> None:
    e2e = {nodeid: names for nodeid, names in declared_by_test.items() if nodeid.startswith("tests/e2e/")}
    fleet = {nodeid: names for nodeid, names in e2e.items() if nodeid.startswith("tests/e2e/fleet/")}
    single = {nodeid: names for nodeid, names in e2e.items() if nodeid not in fleet}
    assert single and all(set(Stack.BINARIES) <= names for names in single.values())
    assert fleet and all(set(Fleet.BINARIES) <= names for names in fleet.values())
    with_grafana = {Path(nodeid.split("::")[0]).name for nodeid, names in e2e.items() if "grafana" in names}
    assert with_grafana == {"test_grafana.py"}


def test_a_stack_config_check_declares_only_the_tool_it_runs(declared_by_test: dict[str, set[str]]) -> None:
    unit = "tests/unit/test_stack_configs.py::"
    assert declared_by_test[unit + "test_amtool_accepts_the_alertmanager_configs[alertmanager.yml]"] == {"amtool"}
    assert declared_by_test[unit + "test_promtool_accepts_config_and_rules_and_every_rule_unit_test_passes[debian]"] \
        == {"debian:promtool"}
    assert declared_by_test[unit + "test_dashboards_are_exactly_what_the_generator_produces_from_semconv"] == set()
