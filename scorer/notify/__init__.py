"""Notifications through Apprise: a durable notification queue in state/, a sender per destination, the messages."""
