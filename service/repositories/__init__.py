"""Read queries of the service, plus the writes of tenants, API keys, datasets and webhook endpoints
(and the reset of a webhook delivery for redelivery); routes stay thin.

A job's state changes (create, dispatch, cancel, claim, writes of an attempt, finish, re-queue)
are not here but in service/lifecycle, which the API, the worker and the reaper share.
"""
