"""The OTel pin is the tested bound: the private names the hot path reads exist and behave in the installed
release, and without them (forced here) the same behaviour comes through the public API."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata

import pytest
import tomllib
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from packaging.requirements import Requirement

from qt_telemetry._engine.recorder import otel_internals
from tests.support.servers import REPO

OTEL = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-exporter-prometheus")


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {r.name: r for r in map(Requirement, project["dependencies"])}


@pytest.mark.parametrize("package", OTEL)
def test_each_otel_package_is_pinned_to_one_minor_release_and_the_installed_one_is_in_it(package: str) -> None:
    requirement = _requirements()[package]
    assert any(spec.operator == "<" for spec in requirement.specifier), f"{requirement}: no upper bound"
    assert requirement.specifier.contains(metadata.version(package), prereleases=True), \
        f"{package} {metadata.version(package)} is outside the tested pin {requirement}"


@pytest.mark.usefixtures("clean_globals")
def test_the_tracer_provider_slot_exists_and_follows_set_tracer_provider() -> None:
    assert otel_internals.TRACE is trace, "the hot path reads the API's own slot in the pinned release"
    assert otel_internals.tracer_provider_slot_behaves() and trace._TRACER_PROVIDER is None
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    assert otel_internals.tracer_provider_slot_behaves() and trace._TRACER_PROVIDER is provider


def test_the_span_slot_exists_and_agrees_with_the_api_both_ways() -> None:
    assert otel_internals.span_slot() is not None
    assert otel_internals.SPAN_SLOT is not None, "the hot path uses the one-step context in the pinned release"


def test_the_names_the_test_reset_uses_exist() -> None:
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    assert callable(Once)
    for module, name in ((trace, "_TRACER_PROVIDER_SET_ONCE"), (metrics_internal, "_METER_PROVIDER_SET_ONCE"),
                         (metrics_internal, "_METER_PROVIDER"), (metrics_internal, "_PROXY_METER_PROVIDER"),
                         (metrics_internal, "_ProxyMeterProvider")):
        assert hasattr(module, name), f"{module.__name__}.{name}"


def test_without_the_private_names_the_same_tests_pass_through_the_public_api() -> None:
    env = {**os.environ, otel_internals.FORCE_PUBLIC: "1"}
    probe = ("from qt_telemetry._engine.recorder import otel_internals as o; "
             "assert isinstance(o.TRACE, o.PublicTrace) and o.SPAN_SLOT is None")
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=60)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/unit/test_traced_order.py", "tests/unit/test_trade_flow.py",
                           "tests/unit/test_order_lifecycle.py",
                           "tests/unit/test_setup.py::test_every_public_call_works_before_init_and_a_later_init_exports_only_state"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
