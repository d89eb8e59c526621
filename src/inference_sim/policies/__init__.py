"""Admission, routing, priority and scheduling policies, looked up by name."""
