"""Every side effect lives here, grouped by concern; clients are injected into activity classes."""
