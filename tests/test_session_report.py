"""The session contract: SessionReport, the old hooks still honoured, and where each field lands."""
from __future__ import annotations

from backends._common import option_flag
from backends.base import Session, SessionReport
from harness.run.case import session_report
from harness.run.runner import _apply_report, _carry_estimates


class OldStyle(Session):
    """A plugin session written before report(): estimates and memory inside timings(), threads in info."""

    def __init__(self):
        super().__init__()
        self.info = {"runtime": "x", "intra_op_num_threads": 3, "mode": "fast"}

    def timings(self):
        return {"calls": 7, "memory": {"peak": 5}, "estimates": {"latency_ns": 10.0, "identity": {"device": "d1"}}}


class NewStyle(Session):
    def report(self):
        return SessionReport(timings={"calls": 2}, memory={"peak": 9}, threads={"pool": 4},
                             info={"runtime": "y"})


class Duck:
    """Not a Session subclass: read through timings() and info."""

    info = {"num_threads": 1}

    def timings(self):
        return None


def test_old_hooks_become_a_report():
    rep = session_report(OldStyle())
    assert rep.estimates == {"latency_ns": 10.0, "identity": {"device": "d1"}}
    assert rep.timings == {"calls": 7, "memory": {"peak": 5}}  # estimates never stay among measured timings
    assert rep.memory == {"peak": 5}
    assert rep.threads == {"intra_op_num_threads": 3}
    assert rep.info["mode"] == "fast"
    duck = session_report(Duck())
    assert duck.timings is None and duck.threads == {"num_threads": 1}


def test_report_lands_in_the_case():
    result = {"status": "ok", "validity": {"valid": True, "reasons": []}, "report": NewStyle().report().to_dict()}
    _apply_report(result, threads=4, peak_rss_bytes=123)
    assert "report" not in result
    assert result["backend_info"] == {"runtime": "y"} and result["timings"] == {"calls": 2}
    assert result["memory"] == {"peak_rss_bytes": 123, "device": {"peak": 9}}
    assert result["threads"] == {"requested": 4, "pool": 4}
    assert "estimates" not in result

    old = {"status": "ok", "validity": {"valid": True, "reasons": []},
           "report": session_report(OldStyle()).to_dict()}
    _apply_report(old, threads=2, peak_rss_bytes=None)
    _carry_estimates(old)
    assert old["estimates"]["latency_ns"] == 10.0 and old["device"] == "d1"
    assert old["threads"] == {"requested": 2, "intra_op_num_threads": 3}


def test_no_session_no_backend_fields():
    """A case that ended before a session existed (unsupported) gets memory only, as before."""
    result = {"status": "unsupported", "reason": "no path"}
    _apply_report(result, threads=1, peak_rss_bytes=7)
    assert result == {"status": "unsupported", "reason": "no path", "memory": {"peak_rss_bytes": 7}}
    partial = {"status": "does_not_fit", "reason": "too big", "report": {"timings": None, "estimates": {"fits": False}}}
    _apply_report(partial, threads=1, peak_rss_bytes=7)
    assert "backend_info" not in partial and partial["timings"] is None and partial["estimates"] == {"fits": False}


def test_option_flag_meanings():
    for on in ("1", "true", "YES", " on ", 1, True):
        assert option_flag(on) and option_flag(on, bare=True)
    for off in ("0", "false", "no", "off", 0, None, "maybe"):
        assert not option_flag(off) and not option_flag(off, bare=True)
    assert option_flag("", bare=True) and not option_flag("")  # a flag given without a value


def test_retries_stop_once_the_attempts_used_the_suites_time():
    from harness.run.case import retry_allowed

    drift = {"reasons": ["unstable: drift +15% between halves"]}
    ok = {"reasons": []}
    # a 2 s window that drifted: retried (twice at most, within 3 x 2 s)
    assert retry_allowed(drift, [], 2, spent_s=2.0, budget_s=6.0)
    assert retry_allowed(drift, [{}], 2, spent_s=4.0, budget_s=6.0)
    assert not retry_allowed(drift, [{}, {}], 2, spent_s=5.9, budget_s=6.0)
    # a window stretched to 12 s for the p90's count: no second one
    assert not retry_allowed(drift, [], 2, spent_s=12.0, budget_s=6.0)
    # nothing to fix: no retry
    assert not retry_allowed(ok, [], 2, spent_s=0.5, budget_s=6.0)
