"""The event stream: types (17 variants), sinks, readers."""

from .types import EVENT_TYPES, KINDS, EventDecodeError, EventFrame, ResourceAmount, iter_events, read_event

__all__ = ["EVENT_TYPES", "KINDS", "EventDecodeError", "EventFrame", "ResourceAmount", "iter_events", "read_event"]
