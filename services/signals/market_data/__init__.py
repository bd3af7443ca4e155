"""Market data behind a provider interface: signal code sees `Bar`, `Quote` and
`Instrument` from `models`, never a broker library's objects."""
