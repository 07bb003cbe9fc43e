"""The merge queue's pure rules: queue order, what merge-tree says, hunks, the matrix, choices."""

from __future__ import annotations

from spawner.core import merge_queue as q


def test_the_queue_follows_plan_order_with_priority_first_within_a_wave():
    runs = [
        q.QueueRun("late", wave=1, priority=0, order=0),
        q.QueueRun("p2", wave=0, priority=2, order=1),
        q.QueueRun("p1b", wave=0, priority=1, order=3),
        q.QueueRun("p1a", wave=0, priority=1, order=2),
        q.QueueRun("p0", wave=0, priority=0, order=4),
    ]
    assert q.queue_order(runs) == ["p0", "p1a", "p1b", "p2", "late"]


def test_a_race_merges_only_its_winner_and_other_strategies_every_success():
    assert q.to_merge("first_success", ["a", "b"], "b") == ["b"]
    assert q.to_merge("first_success", ["a"], None) == []
    assert q.to_merge("merge", ["a", "b"], None) == ["a", "b"]


OUTPUT = (
    "16e864a460f75bc32cb303f9ff23c6176b2bffc1\0f.txt\0g.txt\0\0"
    "1\0f.txt\0Auto-merging\0Auto-merging f.txt\n\0"
    "1\0f.txt\0CONFLICT (contents)\0CONFLICT (content): Merge conflict in f.txt\n\0"
    "1\0g.txt\0CONFLICT (modify/delete)\0CONFLICT (modify/delete): g.txt deleted in b2 and modified in b1.\n\0"
)


def test_merge_tree_output_is_read_with_its_files_and_kinds():
    result = q.parse_merge_tree(OUTPUT)
    assert result.tree == "16e864a460f75bc32cb303f9ff23c6176b2bffc1"
    assert result.files == ("f.txt", "g.txt") and not result.clean
    assert q.conflict_kinds(result) == {"f.txt": "contents", "g.txt": "modify/delete"}
    clean = q.parse_merge_tree("92c839cb289d1c151d2b6515d1883cd8377aab7d\0")
    assert clean.clean and clean.files == ()


def test_hunks_are_the_marked_regions_with_some_context():
    text = "a\nb\n<<<<<<< ours\nO1\nO2\n||||||| base\nB\n=======\nT\n>>>>>>> theirs\nc\nd\ne\nf\n"
    (hunk,) = q.conflict_hunks(text, context=1)
    assert hunk["line"] == 3 and hunk["ours"] == ["O1", "O2"] and hunk["theirs"] == ["T"]
    assert hunk["text"].startswith("b\n<<<<<<< ours") and hunk["text"].endswith(">>>>>>> theirs\nc")
    assert q.has_markers(text) and not q.has_markers("a\n=======\nb\n")
    assert q.conflict_hunks("no markers\n") == []


def test_the_matrix_lists_only_conflicting_pairs_and_each_runs_partners():
    m = q.Matrix(runs=["a", "b", "c"], pairs={("a", "b"): ["x"], ("a", "c"): [], ("b", "c"): []})
    data = m.as_data()
    assert data["pairs"] == [{"a": "a", "b": "b", "files": ["x"]}] and data["checked_pairs"] == 3
    assert q.partners(data, "b") == [{"run": "a", "files": ["x"]}] and q.partners(data, "c") == []
    assert q.pairs_of(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_side_choices_must_cover_each_conflicting_file_with_ours_or_theirs():
    assert q.side_choice_errors(["x", "y"], {"x": "ours", "y": "theirs"}) == []
    errors = q.side_choice_errors(["x", "y"], {"x": "mine", "z": "ours"})
    assert errors == [
        "choose ours or theirs for: y",
        "not a conflicting file: z",
        "a side is ours (the integration branch) or theirs (the run), not mine",
    ]


def test_each_state_offers_its_actions_and_a_reset_reverts_what_was_in_play():
    assert q.actions_for(q.CONFLICT) == ("keep_sides", "rerun", "by_hand", "skip")
    assert q.actions_for(q.RERUNNING) == ()
    assert set(q.ACTIONS) == set(q.STATES)
    assert q.AFTER_RESET == {q.MERGED: q.REVERTED, q.CONFLICT: q.REVERTED, q.GATE_FAILED: q.REVERTED}


def test_the_rerun_note_carries_the_hunks_and_the_take_commands_quote_the_repository():
    conflict = {"files": ["f.txt", "g.bin"], "hunks": {"f.txt": [{"line": 2, "text": "<<<<<<< x"}]}, "kinds": {}}
    note = q.rerun_note(integration="spawner/1/integration", conflict=conflict)
    assert "spawner/1/integration" in note and "### f.txt" in note and "<<<<<<< x" in note and "### g.bin" in note
    assert q.take_commands("/tmp/my repo", "spawner/1/integration")[-1] == (
        "cd '/tmp/my repo' && git merge spawner/1/integration"
    )
