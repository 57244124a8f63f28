"""Records -> OTLP bytes without the SDK (stub: the surface only, for the differential test to fail against)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from prometheus_client.registry import Collector

from qt_telemetry._config import Settings


class LeanProducer:
    def __init__(self, pid: int, instance_id: str, resource: Resource) -> None:
        self.pid = pid
        self.instance_id = instance_id
        self.resource = resource
        self.last_seen = time.time()
        self.goodbye = False

    def drop(self, signal: str, reason: str, count: int) -> None:
        pass

    def producer_drops(self, totals: Mapping[str, int]) -> None:
        pass


class LeanConverter:
    def __init__(self, settings: Settings, *, base_resource: Resource) -> None:
        self.settings = settings
        self.base_resource = base_resource
        self.producers: dict[int, LeanProducer] = {}

    def producer(self, pid: int, instance_id: str) -> LeanProducer:
        state = self.producers.get(pid)
        if state is None or state.instance_id != instance_id:
            resource = self.base_resource.merge(Resource({"service.instance.id": instance_id, "process.pid": pid}))
            state = self.producers[pid] = LeanProducer(pid, instance_id, resource)
        return state

    def accept(self, producer: LeanProducer, records: Sequence[tuple[Any, ...]]) -> None:
        pass

    def take_spans(self, max_spans: int) -> tuple[bytes, int] | None:
        return None

    def span_drop(self, count_by_producer: Mapping[LeanProducer, int], reason: str) -> None:
        pass

    def collect_metrics(self, now_ns: int) -> bytes | None:
        return None

    def retire(self, producer: LeanProducer) -> None:
        pass

    def prometheus_collector(self) -> Collector:
        raise NotImplementedError
