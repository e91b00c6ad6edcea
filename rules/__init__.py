"""Rules: accounting (energy, Scope 2), the factor library and the ledger."""
