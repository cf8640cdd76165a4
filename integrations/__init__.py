"""Plug-ins that let other LLM gateways ask the tierwise router service for a tier (a leaf)."""
