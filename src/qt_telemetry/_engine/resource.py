"""The resource every span and metric of this bot carries, from the settings (both sides of the engine use it)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from qt_telemetry._config import DEFAULT_SERVICE_NAME, Settings


def base_resource(settings: Settings) -> Resource:
    """OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (via the SDK), our arguments over them, our default name."""
    attributes: dict[str, Any] = dict(settings.resource_attributes)
    if settings.service_name:
        attributes[SERVICE_NAME] = settings.service_name
    resource = Resource.create(attributes)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource
