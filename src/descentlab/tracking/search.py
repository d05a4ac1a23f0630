"""Every run a search matches, page by page: `MlflowClient.search_runs` returns at most `max_results` runs (1,000
per page here) and silently stops there unless its `page_token` is followed, which once cut a sweep's children
short. No mlflow import: the caller passes its client (an MlflowClient or tracking.retry.RetryingClient).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["PAGE", "search_all", "search_pages"]

PAGE = 1000  # runs per search_runs call


def search_pages(client: Any, experiment_id: str, filter_string: str = "",
                 order_by: Sequence[str] | None = None) -> Iterator[list[Any]]:
    """The runs of `experiment_id` matching `filter_string` (active ones, as `search_runs`), one page at a time."""
    token: str | None = None
    while True:
        page = client.search_runs([str(experiment_id)], filter_string=filter_string, max_results=PAGE,
                                  order_by=list(order_by) if order_by else None, page_token=token)
        yield page
        token = page.token
        if not token:
            return


def search_all(client: Any, experiment_id: str, filter_string: str = "",
               order_by: Sequence[str] | None = None) -> list[Any]:
    """Every matching run (`search_pages`, all pages)."""
    return [run for page in search_pages(client, experiment_id, filter_string, order_by) for run in page]
