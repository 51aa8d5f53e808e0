"""Encrypted backup archives, storage targets, schedule, retention and restore."""
