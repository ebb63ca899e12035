"""The usage ledger: one row per model call, with tokens and cost."""
