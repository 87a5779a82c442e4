"""Bridges from exported ssl_speech models to other toolkits (s3prl); each bridge is optional."""
