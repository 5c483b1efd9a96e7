"""The OpenAI Realtime GA protocol: ids, errors, client-event validation, the session object."""
