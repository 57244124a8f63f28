"""The resource every span and metric of this bot carries, from the settings (both sides of the engine use it)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    TELEMETRY_SDK_LANGUAGE,
    TELEMETRY_SDK_NAME,
    TELEMETRY_SDK_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.version import __version__ as sdk_version

from qt_telemetry._config import DEFAULT_SERVICE_NAME, Settings
from qt_telemetry._redaction import Redactor


def base_resource(settings: Settings) -> Resource:
    """OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (via the SDK), our arguments over them, our default name."""
    attributes: dict[str, Any] = dict(settings.resource_attributes)
    if settings.service_name:
        attributes[SERVICE_NAME] = settings.service_name
    try:
        resource = Resource.create(attributes)
    except RuntimeError:  # the SDK runs its detectors on a thread pool: where no thread can be had, read them here
        resource = Resource({TELEMETRY_SDK_LANGUAGE: "python", TELEMETRY_SDK_NAME: "opentelemetry",
                             TELEMETRY_SDK_VERSION: sdk_version}).merge(OTELResourceDetector().detect()).merge(
            Resource(attributes))
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    if SERVICE_NAME not in resource.attributes:
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return _redacted(resource, Redactor(settings.secret_keys, settings.secret_patterns, settings.secret_values))


def _redacted(resource: Resource, redactor: Redactor) -> Resource:
    """Secrets stay in here too: a resource attribute named like a credential is refused, text is scrubbed
    (``OTEL_RESOURCE_ATTRIBUTES=deploy.url=https://user:pass@host`` goes out without the password)."""
    clean: dict[str, Any] = {}
    for key, value in resource.attributes.items():
        if redactor.is_secret_key(key) and not key.startswith(("service.", "telemetry.")):
            continue
        clean[key] = redactor.text(value) if isinstance(value, str) else value
    return Resource(clean, resource.schema_url)
