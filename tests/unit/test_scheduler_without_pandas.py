"""The scheduler's process never holds pandas: exchange calendars are read in a child."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime

import pytest

from services.scheduler import trading_calendar

pytestmark = pytest.mark.unit


def test_the_scheduler_module_imports_without_pandas():
    check = "import services.scheduler.main, sys; assert 'pandas' not in sys.modules, 'pandas imported'"
    subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, timeout=120)


def test_asking_a_calendar_leaves_pandas_out_of_the_process():
    check = (
        "import sys, datetime; from services.scheduler import trading_calendar as t; "
        "assert t.is_trading_day('XNYS', datetime.date(2026, 12, 24)); "
        "assert 'pandas' not in sys.modules and 'exchange_calendars' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, timeout=120)


def test_sessions_and_closes_are_the_librarys():
    # Christmas week 2026: the 24th closes early, the 25th is a holiday, the 26th a Saturday
    assert trading_calendar.sessions_between("XNYS", date(2026, 12, 23), date(2026, 12, 28)) == [
        date(2026, 12, 23), date(2026, 12, 24), date(2026, 12, 28)]
    assert trading_calendar.session_close("XNYS", date(2026, 12, 24)) == datetime(2026, 12, 24, 18, tzinfo=UTC)
    assert trading_calendar.session_close("XNYS", date(2026, 12, 23)) == datetime(2026, 12, 23, 21, tzinfo=UTC)
    assert trading_calendar.session_close("XNYS", date(2026, 12, 25)) is None
    # across the edge of two blocks of years
    assert trading_calendar.sessions_between("XNYS", date(2029, 12, 31), date(2030, 1, 2)) == [
        date(2029, 12, 31), date(2030, 1, 2)]
