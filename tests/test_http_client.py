"""Retries beyond the fault matrix: which answers' own waits are believed."""

import pytest

from tests.coingecko_imitation import Fault

SOURCE = "coingecko_api"


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_is_backed_off_whatever_its_retry_after_asks(app, coingecko, run_etl, status):
    # Only a 429 says when to come back; a server error's Retry-After does not stretch the wait,
    # nor does one past the budget end the read at once.
    app.config["API_RETRY_BUDGET_SECONDS"] = 5.0
    coingecko.fail_next(Fault(status, headers={"Retry-After": "60"}))

    run = run_etl(SOURCE)[SOURCE]

    assert (run.status, run.rows_read) == ("SUCCESS", 5)
    assert [r.status for r in coingecko.page_requests()] == [status, 200]
