"""The web dashboard at ``/ui`` on the daemon's own app (docs/dashboard.md).

A face beside the REST API over the same service (pyproject.toml's layer contract):
server-rendered Jinja2 pages (autoescape on), htmx for the parts that change, the log
over server-sent events; the scripts it loads are vendored under ``static/vendor``
(``scripts/vendor-ui``), nothing is fetched at run time. Its login and CSRF checks are
:mod:`dispatcher.web.session`, applied by the API's one auth middleware. The daemon
mounts :class:`~dispatcher.web.mount.LazyUi`, which builds the pages
(:func:`dispatcher.web.app.create_ui`) at the first request: importing this package
does not import Jinja2 or Pygments.
"""

from dispatcher.web.mount import LazyUi
from dispatcher.web.session import UI_PREFIX, Sessions, UiGuard

__all__ = ["UI_PREFIX", "LazyUi", "Sessions", "UiGuard"]
