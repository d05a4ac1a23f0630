"""tracking.search: a search follows every page (search_runs alone stops at its max_results)."""

from __future__ import annotations

from descentlab.tracking.search import PAGE, search_all, search_pages


class PagedList(list):
    token: str | None = None


class FakeClient:
    """search_runs over `n` runs, PAGE at a time, recording what it was asked."""

    def __init__(self, n: int) -> None:
        self.runs = list(range(n))
        self.calls: list[dict] = []

    def search_runs(self, experiment_ids, filter_string="", max_results=1000, order_by=None, page_token=None):
        self.calls.append({"ids": experiment_ids, "filter": filter_string, "max": max_results, "order": order_by,
                           "token": page_token})
        start = int(page_token or 0)
        page = PagedList(self.runs[start:start + max_results])
        page.token = str(start + max_results) if start + max_results < len(self.runs) else None
        return page


def test_every_page_is_followed_and_the_query_is_passed_on() -> None:
    client = FakeClient(2 * PAGE + 5)
    runs = search_all(client, 7, "attributes.status = 'RUNNING'", order_by=["attributes.start_time ASC"])
    assert runs == client.runs
    assert [c["token"] for c in client.calls] == [None, str(PAGE), str(2 * PAGE)]
    assert all(c["ids"] == ["7"] and c["filter"] == "attributes.status = 'RUNNING'" and c["max"] == PAGE
               and c["order"] == ["attributes.start_time ASC"] for c in client.calls)


def test_pages_come_one_at_a_time_and_an_empty_search_is_one_empty_page() -> None:
    assert [len(p) for p in search_pages(FakeClient(PAGE + 1), "1")] == [PAGE, 1]
    assert [list(p) for p in search_pages(FakeClient(0), "1")] == [[]]
