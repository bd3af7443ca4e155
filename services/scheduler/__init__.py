"""The scheduler: schedules as data, fired exactly once per slot, every slot in the ledger."""
