"""sandbox-broker: leases pre-created cloud sandboxes to lab participants, exactly once."""

__all__: list[str] = []
