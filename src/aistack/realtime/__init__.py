"""Cross-process coordination through Redis: job events pushed to clients, and locks."""
