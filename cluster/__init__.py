"""Raft cluster state, PostgreSQL management, the HA loop and the virtual IP."""
