"""Avro schemas of every command and event: the contract for other teams."""
