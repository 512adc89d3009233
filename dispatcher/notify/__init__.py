"""Job notifications: ntfy, Slack, and Standard-Webhooks-signed generic webhooks.

One module per step, each usable on its own:

- :mod:`~dispatcher.notify.targets`: one ``notify:`` entry (settings or a trigger
  file) validated into a ``Target``, and which notices go to it.
- :mod:`~dispatcher.notify.notices`: the ``JobNotice`` the caller builds from a job row.
- :mod:`~dispatcher.notify.formats`: a (target, notice) pair turned into the exact
  HTTP request, one payload format per target type. Pure: no I/O.
- :mod:`~dispatcher.notify.signing`: Standard Webhooks secrets and signatures.
- :mod:`~dispatcher.notify.send`: one attempt at sending a request, judged final or
  worth retrying.
- :mod:`~dispatcher.notify.delivery`: the ``Notifier``, which delivers in the
  background with retries and reports every final outcome.

The package knows nothing of the database: the caller adapts a job row to a
``JobNotice`` and records each ``Delivery``. See ``docs/notifications.md``.
"""
