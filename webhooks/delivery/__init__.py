"""The delivery path: one module per step, each step a function whose typed result the next consumes.

A deliver job (``webhooks.tasks.deliver``: delivery ids only) runs :func:`pipeline.deliver`:

1. ``claim``: lease the due rows among the ids and load their bodies and subscriptions → ``Batch``
   of ``Claimed`` (the fan-out, ``webhooks.dispatch``, builds a ``Batch`` of the rows it inserted leased);
2. ``prepare``: each one becomes ``Cancelled``, ``Deferred`` (slow endpoint, rate limit) or ``Ready``
   (signed, its rate-limit wait reserved);
3. ``send``: each ``Ready`` one is posted → ``Sent`` (or ``Deferred`` if its endpoint turned slow);
4. ``recorder``: every settled one (``Cancelled | Deferred | Sent``) is written by ``record`` in a group
   commit with other batches' → ``Recorded``, while ``lease`` keeps the rows leased;
5. ``schedule``: after commit, retries and events are enqueued → ``Scheduled``.

``stages`` holds the values, ``runtime`` the per-worker ``WorkerContext`` every step is given, and
``rows`` the delivery-row writes made outside a batch (new rows, replay resets, cancelling).
"""
