"""Review: approvals needed (SPAWNER REVIEW_APPROVALS, REVIEW_OWNER_COUNTS), who approved, comments
as safe Markdown, and the review in both exports."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from spawner import services
from tests.dashboard.conftest import grant

HX = {"HX-Request": "true"}


@pytest.fixture
def ann(db):
    from django.contrib.auth.models import User

    return grant(User.objects.create_user("ann", password="pw-ann-12345"), "review_batch")


def review(person, batch, decision="approve", comment=""):
    client = Client()
    client.force_login(person)
    return client.post(f"/batches/{batch.id}/reviews/", {"decision": decision, "comment": comment}, headers=HX)


def record(html: str) -> str:
    return html.split('id="review-record"', 1)[1].split("</ol>", 1)[0]


def test_the_owner_cannot_approve_their_own_batch_alone(signed_in, member, ann, reviewed):
    html = record(review(member, reviewed).content.decode())
    assert 'review pending">pending' in html and "0 of 1 approval needed" in html
    assert "approved by mia" in html and "mia: the batch's owner, whose approval does not count" in html
    form = signed_in.get(f"/batches/{reviewed.id}/result/").content.decode()
    assert "You launched this batch: your approval is recorded but does not count" in form
    html = record(review(ann, reviewed).content.decode())
    assert 'review approved">approved' in html and "1 of 1 approval needed" in html and "approved by mia, ann" in html
    assert "review: approved" in signed_in.get(f"/batches/{reviewed.id}/").content.decode()


def test_the_settings_change_what_approves(settings, member, ann, reviewer, reviewed):
    settings.SPAWNER = {**settings.SPAWNER, "REVIEW_OWNER_COUNTS": True}
    assert "1 of 1 approval needed" in record(review(member, reviewed).content.decode())
    settings.SPAWNER = {**settings.SPAWNER, "REVIEW_OWNER_COUNTS": False, "REVIEW_APPROVALS": 2}
    html = record(review(ann, reviewed).content.decode())
    assert 'review pending">pending' in html and "1 of 2 approvals needed" in html
    html = record(review(reviewer, reviewed).content.decode())
    assert 'review approved">approved' in html and "2 of 2 approvals needed" in html


HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "[click](javascript:alert(3))",
    "[click](JaVaScRiPt:alert(4))",
    "[c](data:text/html;base64,PHNjcmlwdD4=)",
    "[ref]\n\n[ref]: javascript:alert(5)",
    '<a href="javascript:alert(6)">x</a>',
    "![pic](https://tracker.example/pixel.png)",
    "[ok](https://example.org/docs) **bold** `code <b>`",
]


def test_review_comments_are_safe_markdown(member, ann, reviewed):
    review(ann, reviewed, "comment", "\n\n".join(HOSTILE))
    client = Client()
    client.force_login(member)
    html = client.get(f"/batches/{reviewed.id}/result/").content.decode()
    comment = html.split('class="comment markdown">', 1)[1].split("</div>", 1)[0]
    assert "<script" not in comment and "<img" not in comment and "<b>" not in comment
    hrefs = re.findall(r'href="([^"]*)"', comment)
    assert hrefs == ["https://tracker.example/pixel.png", "https://example.org/docs"], hrefs
    assert comment.count('rel="nofollow noopener noreferrer"') == len(hrefs)
    assert "<strong>bold</strong>" in comment and "<code>code &lt;b&gt;</code>" in comment
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in comment, "the text is kept, as text"


def test_both_exports_carry_the_review(member, ann, reviewed):
    review(ann, reviewed, "request_changes", "fix the <b>injection</b> [x](javascript:alert(1))")
    client = Client()
    client.force_login(member)
    data = json.loads(client.get(f"/batches/{reviewed.id}/result.json").content)
    assert data["review"]["state"] == "changes_requested"
    assert data["review"]["reviews"][0]["author"] == "ann"
    assert data["review"]["reviews"][0]["comment"] == "fix the <b>injection</b> [x](javascript:alert(1))"
    text = client.get(f"/batches/{reviewed.id}/result.md").content.decode()
    section = text.split("\n## Review\n", 1)[1]
    assert "State: **changes requested** (0 of 1 approval needed)" in section
    assert "- **ann** request changes" in section
    assert "> fix the &lt;b&gt;injection&lt;/b&gt; [x\\](javascript:alert(1))" in section


def test_the_review_box_answer_keeps_the_form_for_reviewers(ann, reviewed):
    html = review(ann, reviewed, "comment", "looks fine").content.decode()
    assert 'class="review-form"' in html and "<p>looks fine</p>" in html


def test_a_review_through_the_service_shows_in_the_record(member, ann, reviewed, signed_in):
    services.review_submit(batch=reviewed, author=ann, decision="approve", comment="- one\n- two")
    html = signed_in.get(f"/batches/{reviewed.id}/result/").content.decode()
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in html
