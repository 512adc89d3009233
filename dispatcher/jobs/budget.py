"""Cost budgets: the per-repo daily cap on what agents report they spent."""

from __future__ import annotations

from dispatcher.config import Settings
from dispatcher.errors import BudgetExceeded
from dispatcher.store.database import Store
from dispatcher.store.models import Repo, start_of_day


def check_daily(settings: Settings, store: Store, repo: Repo) -> None:
    """Raise :class:`BudgetExceeded` when the repo's jobs finished since 00:00 UTC have
    reported at least its daily cap (the repo's own, else ``DISPATCHER_DAILY_COST_USD``)."""
    cap = repo.daily_cost_usd or settings.daily_cost_usd
    if cap is None or repo.id is None:
        return
    spent = store.cost_since(repo.id, start_of_day())
    if spent >= cap:
        raise BudgetExceeded(
            f"repo {repo.name} has spent ${spent:.2f} of its ${cap:.2f} daily budget "
            "(UTC day); no job is dispatched until tomorrow or a higher cap"
        )
