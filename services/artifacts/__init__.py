"""The artifacts service: stores runs, steps, artifacts and log records from the event
topics into PostgreSQL, exactly once per event, and serves them over HTTP."""
