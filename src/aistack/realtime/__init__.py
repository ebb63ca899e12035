"""Job events pushed to browsers and API clients as they happen."""
