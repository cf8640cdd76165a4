"""The OpenAI-compatible gateway: the app and its config, one chat request's path (requests ->
planning -> levers -> upstream -> records), where decisions come from, and the batch window."""
