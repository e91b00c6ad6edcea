"""Edge: device drivers, device profiles, the edge agent and its outbox."""
