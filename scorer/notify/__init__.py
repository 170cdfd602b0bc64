"""Notifications through Apprise: a durable outbox in state/, a sender per destination, the messages."""
