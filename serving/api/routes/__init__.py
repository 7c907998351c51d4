"""One router per resource: health (and metrics), recommendations, events, items."""
