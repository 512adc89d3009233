"""The web dashboard at ``/ui`` on the daemon's own app (docs/dashboard.md).

A face beside the REST API over the same service (pyproject.toml's layer contract):
server-rendered Jinja2 pages (autoescape on), htmx for the parts that change, the log
over server-sent events; the scripts it loads are vendored under ``static/vendor``
(``scripts/vendor-ui``), nothing is fetched at run time. Its login and CSRF checks are
:mod:`dispatcher.web.session`, applied by the API's one auth middleware.
"""

from dispatcher.web.app import create_ui
from dispatcher.web.session import UI_PREFIX, Sessions, UiGuard

__all__ = ["UI_PREFIX", "Sessions", "UiGuard", "create_ui"]
