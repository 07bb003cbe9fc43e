"""Each aggregation strategy on hand-built results."""

from __future__ import annotations

from spawner.core.aggregation import RunResult, aggregate, merge_findings, to_markdown


def ok(key, result=None, priority=1, order=0, finished=None, **kw) -> RunResult:
    return RunResult(
        key=key, status="succeeded", priority=priority, order=order, finished=finished, result=result, **kw
    )


def finding(title, file="a.py", line=1, severity="low", detail=""):
    return {"title": title, "file": file, "line": line, "severity": severity, "detail": detail}


def test_merge_folds_the_same_finding_and_credits_every_agent():
    runs = [
        ok("sec", {"findings": [finding("SQL injection", severity="high"), finding("unused import")]}),
        ok("style", {"findings": [finding("Unused  import", file="./a.py", severity="medium")]}),
    ]
    agg = aggregate("merge", runs).as_data()

    assert agg["status"] == "complete"
    titles = {f["title"]: f for f in agg["findings"]}
    assert len(agg["findings"]) == 2
    assert titles["unused import"]["agents"] == ["sec", "style"]
    assert titles["unused import"]["severity"] == "medium", "the most severe report wins"
    assert agg["findings"][0]["title"] == "SQL injection", "sorted by severity"


def test_merge_keeps_apart_findings_on_different_lines():
    runs = [ok("a", {"findings": [finding("x", line=1)]}), ok("b", {"findings": [finding("x", line=2)]})]
    assert len(merge_findings(runs)) == 2


def test_malformed_findings_are_skipped_not_fatal():
    runs = [ok("a", {"findings": ["text", {"no": "title"}, finding("real", line="7"), finding("bad line", line="x")]})]
    found = merge_findings(runs)
    assert [(f.title, f.line) for f in found] == [("bad line", None), ("real", 7)]


def test_vote_takes_the_majority_verdict():
    runs = [ok("a", {"verdict": "pass"}), ok("b", {"verdict": "PASS"}), ok("c", {"verdict": "fail"})]
    agg = aggregate("vote", runs).as_data()
    assert (agg["verdict"], agg["status"], agg["escalate"]) == ("pass", "complete", None)
    assert agg["votes"] == {"pass": 2, "fail": 1}


def test_a_vote_tie_is_escalated():
    runs = [ok("a", {"verdict": "pass"}), ok("b", {"verdict": "fail"})]
    agg = aggregate("vote", runs).as_data()
    assert agg["status"] == "escalated"
    assert "tie between fail, pass" in agg["escalate"]
    assert agg["verdict"] is None


def test_a_vote_without_quorum_is_escalated():
    runs = [ok("a", {"verdict": "pass"}), RunResult("b", "failed"), RunResult("c", "failed")]
    agg = aggregate("vote", runs).as_data()
    assert "no quorum" in agg["escalate"]
    assert agg["unused"] == {"b": "run failed", "c": "run failed"}


def test_a_vote_with_no_verdicts_is_escalated():
    agg = aggregate("vote", [ok("a", {"summary": "hm"})]).as_data()
    assert agg["escalate"] == "no agent gave a verdict"


def test_priority_takes_the_highest_priority_success_and_keeps_the_rest_as_support():
    runs = [
        ok("p2", {"summary": "low"}, priority=2, order=0),
        RunResult("p0", "failed", priority=0, order=1),
        ok("p1", {"summary": "mid", "verdict": "pass"}, priority=1, order=2),
    ]
    agg = aggregate("priority", runs).as_data()
    assert agg["winner"] == "p1"
    assert agg["supporting"] == ["p2"]
    assert agg["verdict"] == "pass"
    assert agg["status"] == "partial"
    assert agg["notes"][0]["level"] == "escalation"


def test_first_success_picks_the_earliest_finisher_and_cancelled_losers_are_no_gap():
    runs = [
        ok("slow", {"summary": "b"}, finished=20.0),
        ok("fast", {"summary": "a"}, finished=10.0),
        RunResult("loser", "cancelled"),
    ]
    agg = aggregate("first_success", runs).as_data()
    assert agg["winner"] == "fast"
    assert "loser" not in agg["unused"]


def test_all_shows_every_result_side_by_side():
    agg = aggregate("all", [ok("a", {"summary": "one"}), ok("b")]).as_data()
    assert [a["key"] for a in agg["agents"]] == ["a", "b"]
    assert agg["findings"] == []


def test_runs_without_a_result_file_still_contribute_their_output():
    agg = aggregate("all", [ok("a", output_tail="first\nlast line\n")]).as_data()
    assert agg["agents"][0]["summary"] == "last line"


def test_invalid_json_is_a_gap_named_after_the_run():
    runs = [ok("good", {"findings": [finding("x")]}), ok("broken", result_error="result file is not valid JSON")]
    agg = aggregate("merge", runs).as_data()
    assert agg["status"] == "partial"
    assert agg["unused"]["broken"].startswith("result error")
    assert agg["used"] == ["good"]


def test_nothing_usable_is_empty_not_an_error():
    agg = aggregate("merge", [RunResult("a", "failed"), RunResult("b", "skipped")]).as_data()
    assert agg["status"] == "empty"
    assert agg["findings"] == []


def test_an_empty_batch_aggregates_to_empty():
    assert aggregate("vote", []).as_data()["status"] == "empty"


def test_failure_severity_follows_priority():
    runs = [
        RunResult("p0", "failed", priority=0),
        RunResult("p1", "timed_out", priority=1),
        RunResult("p2", "lost", priority=2),
        RunResult("s", "skipped", priority=0),
    ]
    levels = {n["run"]: n["level"] for n in aggregate("merge", runs).as_data()["notes"]}
    assert levels == {"p0": "escalation", "p1": "warning", "p2": "note", "s": "warning"}


def test_markdown_export_has_findings_agents_and_gaps():
    runs = [
        ok("sec", {"summary": "1 issue", "findings": [finding("x | y", severity="high")]}),
        RunResult("docs", "failed", priority=2),
    ]
    md = to_markdown(aggregate("merge", runs).as_data(), title="Review")
    assert md.startswith("# Review")
    assert "| high | x \\| y | a.py | 1 | sec |" in md
    assert "- docs: run failed" in md
    assert "note: P2 run 'docs' ended failed" in md
