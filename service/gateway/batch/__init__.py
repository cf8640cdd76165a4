"""The batch window: non-urgent requests deferred into OpenAI Batch API jobs (front, job store,
lease,
background runner, the Batch API client)."""
