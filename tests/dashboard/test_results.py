"""A batch's combined result: the page, sorting and filtering its findings, reviews, exports."""

from __future__ import annotations

import json

import pytest

from spawner import selectors, services
from spawner.core import aggregation
from spawner.models import Review, RunEvent
from tests.dashboard.conftest import end_with_results, grant


def findings_order(html: str) -> list[str]:
    """The titles in the findings table, top to bottom."""
    rows = html.split('<tr class="finding">')[1:]
    return [row.split('<td class="title">', 1)[1].split("</td>", 1)[0] for row in rows]


def test_the_result_page_shows_the_merged_findings_and_each_agent(signed_in, reviewed):
    html = signed_in.get(f"/batches/{reviewed.id}/result/").content.decode()
    assert 'id="result-header"' in html and f'ws-connect="/ws/batches/{reviewed.id}/result/"' in html
    assert "strategy <strong>merge</strong>" in html and 'class="verdict fail"' in html
    assert "3 findings from 2 agents" in html
    # The injection both reviewers reported is one row crediting both.
    injection = html.split("Shell injection", 1)[1].split("</tr>", 1)[0]
    assert 'href="#agent-security">security' in injection and 'href="#agent-style">style' in injection
    assert "sh -c with &lt;user&gt; input" in html  # agent text is escaped
    assert 'id="agent-security"' in html and "one injection, one broad except" in html
    assert "quote the arguments" in html and "1200 tokens" in html


def test_the_result_page_names_the_gaps_and_the_failures_by_level(signed_in, reviewed):
    html = signed_in.get(f"/batches/{reviewed.id}/result/").content.decode()
    gaps = html.split('id="gaps"', 1)[1].split("</section>", 1)[0]
    assert 'class="level escalation">escalation' in gaps and "P0 run &#x27;critical&#x27; ended failed" in gaps
    assert "critical</a>: run failed" in gaps
    assert "1 open escalation" in html


def test_findings_sort_by_severity_file_and_agents(signed_in, reviewed):
    url = f"/batches/{reviewed.id}/result/"
    assert findings_order(signed_in.get(url).content.decode())[1:] == ["broad except", "long function"]
    by_file = findings_order(signed_in.get(url + "?sort=file").content.decode())
    assert by_file == ["long function", "broad except", by_file[2]] and "Shell injection" in by_file[2]
    reversed_files = findings_order(signed_in.get(url + "?sort=-file").content.decode())
    assert reversed_files == by_file[::-1]
    by_agents = findings_order(signed_in.get(url + "?sort=agents").content.decode())
    assert "Shell injection" in by_agents[0], "the finding two agents agree on comes first"


def test_findings_filter_by_severity_file_and_agent(signed_in, reviewed):
    url = f"/batches/{reviewed.id}/result/"
    assert findings_order(signed_in.get(url + "?severity=low").content.decode()) == ["broad except"]
    assert findings_order(signed_in.get(url + "?file=LIVE.py").content.decode()) == ["long function"]
    only_style = findings_order(signed_in.get(url + "?agent=style").content.decode())
    assert len(only_style) == 2 and "broad except" not in only_style
    html = signed_in.get(url + "?severity=critical").content.decode()
    assert "No finding matches these filters" in html and "0 of 3 findings match" in html


def test_an_htmx_sort_or_filter_gets_only_the_findings_table(signed_in, reviewed):
    response = signed_in.get(f"/batches/{reviewed.id}/result/?severity=info&sort=-file", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="findings" data-computed="')
    assert 'id="result-header"' not in html and "<html" not in html
    assert findings_order(html) == ["long function"]
    assert 'name="sort" value="-file"' in html  # the filter form keeps the sort


def test_going_back_to_a_filtered_url_gets_the_whole_page(signed_in, reviewed):
    """htmx restores history it has not cached by asking for the pushed URL: that is a whole page."""
    headers = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    html = signed_in.get(f"/batches/{reviewed.id}/result/?severity=info", headers=headers).content.decode()
    assert 'id="result-header"' in html and findings_order(html) == ["long function"]


def test_unknown_filter_values_are_ignored(signed_in, reviewed):
    response = signed_in.get(f"/batches/{reviewed.id}/result/?severity=bogus&sort=nonsense")
    assert response.status_code == 200 and len(findings_order(response.content.decode())) == 3


def test_a_running_batch_has_no_result_yet(signed_in, member, make_batch):
    batch = make_batch(member)
    html = signed_in.get(f"/batches/{batch.id}/result/").content.decode()
    assert "No combined result yet" in html and "Export Markdown" not in html
    assert signed_in.get(f"/batches/{batch.id}/result.md").status_code == 404
    assert signed_in.get(f"/batches/{batch.id}/result.json").status_code == 404


def test_an_unknown_batch_has_no_result_page(signed_in, db):
    assert signed_in.get("/batches/999/result/").status_code == 404


def test_the_batch_page_links_to_the_result_and_shows_the_review_state(signed_in, client, teammate, reviewed):
    html = signed_in.get(f"/batches/{reviewed.id}/").content.decode()
    header = html.split('id="batch-header"', 1)[1].split("</section>", 1)[0]
    assert f'href="/batches/{reviewed.id}/result/"' in header and "review: pending" in header
    client.force_login(grant(teammate, "review_batch"))
    client.post(f"/batches/{reviewed.id}/reviews/", {"decision": "approve"})
    html = signed_in.get(f"/batches/{reviewed.id}/").content.decode()
    assert "review: approved" in html


def test_approving_records_the_review_and_its_author(signed_in, member, reviewed):
    review = {"decision": "approve", "comment": "ship it"}
    response = signed_in.post(f"/batches/{reviewed.id}/reviews/", review, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith('<div id="review-box">')
    # The owner's own approval is recorded but does not count (SPAWNER REVIEW_OWNER_COUNTS).
    assert "ship it" in html and 'class="badge big review pending"' in html and "0 of 1 approval needed" in html
    assert (Review.objects.get().author, Review.objects.get().decision) == (member, "approve")
    assert RunEvent.objects.get(kind="review.approve").actor == member


def test_requesting_changes_needs_a_comment(signed_in, reviewed):
    response = signed_in.post(
        f"/batches/{reviewed.id}/reviews/",
        {"decision": "request_changes", "comment": "  "},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 409 and "Say what should change" in response.content.decode()
    assert not Review.objects.exists()


def test_changes_requested_outweighs_an_approval(signed_in, client, teammate, reviewed):
    signed_in.post(f"/batches/{reviewed.id}/reviews/", {"decision": "approve"})
    client.force_login(grant(teammate, "review_batch"))
    client.post(f"/batches/{reviewed.id}/reviews/", {"decision": "request_changes", "comment": "fix the injection"})
    html = client.get(f"/batches/{reviewed.id}/result/").content.decode()
    assert "review: changes requested" in html and "fix the injection" in html
    record = html.split('id="review-record"', 1)[1]
    assert record.index("mia") < record.index("bob"), "the record reads oldest first"


def test_reviewing_needs_the_review_permission(client, viewer, launcher, reviewed):
    for user in (viewer, launcher):
        client.force_login(user)
        response = client.post(
            f"/batches/{reviewed.id}/reviews/", {"decision": "approve"}, headers={"HX-Request": "true"}
        )
        assert response.status_code == 403 and "permission to review" in response.content.decode()
        assert client.post(f"/batches/{reviewed.id}/reviews/", {"decision": "approve"}).status_code == 403
    assert not Review.objects.exists()


def test_the_engine_refuses_a_review_without_the_permission(viewer, reviewed):
    from spawner.errors import NotAllowed

    with pytest.raises(NotAllowed, match="permission to review"):
        services.review_submit(batch=reviewed, author=viewer, decision="approve")
    assert not Review.objects.exists()


def test_the_review_form_is_hidden_from_who_may_not_review(client, viewer, reviewed):
    client.force_login(viewer)
    html = client.get(f"/batches/{reviewed.id}/result/").content.decode()
    assert 'data-may=""' in html
    assert 'class="review-form"' not in html and "Reviewing: you need the permission to review results" in html


def test_an_unknown_decision_is_refused(signed_in, reviewed):
    response = signed_in.post(f"/batches/{reviewed.id}/reviews/", {"decision": "merge"}, headers={"HX-Request": "true"})
    assert response.status_code == 400 and not Review.objects.exists()


def test_a_review_without_htmx_redirects_back_with_a_message(signed_in, reviewed):
    response = signed_in.post(f"/batches/{reviewed.id}/reviews/", {"decision": "comment", "comment": "hm"}, follow=True)
    assert response.redirect_chain[-1][0] == f"/batches/{reviewed.id}/result/"
    assert "Your review is recorded" in response.content.decode()


def test_the_markdown_export_downloads_the_aggregation(signed_in, reviewed):
    response = signed_in.get(f"/batches/{reviewed.id}/result.md")
    assert response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == f'attachment; filename="batch-{reviewed.id}-result.md"'
    text = response.content.decode()
    assert text.startswith(aggregation.to_markdown(reviewed.aggregation_result.data, title=text.splitlines()[0][2:]))
    assert "\n## Review\n" in text and "State: **pending** (0 of 1 approval needed)" in text
    assert text.startswith(f"# Batch #{reviewed.id} review: combined result")
    assert "| high | Shell injection | spawner/runners/shell.py | 12 | security, style |" in text
    assert "## Gaps" in text and "- critical: run failed" in text


def test_the_json_export_is_what_the_cli_prints(signed_in, reviewed):
    response = signed_in.get(f"/batches/{reviewed.id}/result.json")
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="batch-{reviewed.id}-result.json"'
    data = json.loads(response.content)
    review = data.pop("review")  # beside the aggregation: the review state and every decision
    assert (review["state"], review["approvals_needed"], review["reviews"]) == ("pending", 1, [])
    assert data == selectors.batch_summary(reviewed)["aggregation"]
    assert data["status"] == "partial" and data["unused"] == {"critical": "run failed"}


def test_an_all_strategy_result_shows_the_agents_side_by_side(signed_in, member, make_batch):
    batch = end_with_results(make_batch(member), {"build": {"summary": "built"}, "lint": {"summary": "clean"}})
    html = signed_in.get(f"/batches/{batch.id}/result/").content.decode()
    assert "keeps every result side by side" in html
    assert "built" in html and "clean" in html
