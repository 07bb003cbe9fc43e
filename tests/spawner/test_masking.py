"""Masking secrets: plain data in, nothing of a secret out, however the output is cut."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spawner.core import masking
from spawner.core.masking import StreamMasker, mask, mask_json, mask_window

SECRET = "hunter2-token"


def stream(data: bytes, secrets, size: int) -> bytes:
    masker = StreamMasker(secrets)
    out = b"".join(masker.feed(data[i : i + size]) for i in range(0, len(data), size))
    return out + masker.finish()


def test_a_secret_in_text_becomes_stars():
    assert mask(f"token={SECRET}; again {SECRET}.", [SECRET]) == "token=***; again ***."


def test_short_and_empty_values_are_not_masked_because_they_would_destroy_the_output():
    assert masking.usable(["", "abc", "abcd", "abcd"]) == ["abcd"]
    assert mask("a b c 1 2 3", masking.usable(["1", "a"])) == "a b c 1 2 3"


def test_overlapping_secrets_are_masked_as_one_span_leaving_no_part_of_either():
    secrets = masking.usable(["abcdef", "defghi"])
    assert mask("xxabcdefghixx", secrets) == "xx***xx"
    assert mask("xxabcdefxx defghi", secrets) == "xx***xx ***"


def test_a_secret_that_overlaps_itself_is_masked_entirely():
    assert mask("abababab", ["abab"]) == "***"


def test_unicode_secrets_are_masked_in_text_and_in_utf8_bytes():
    secret = "pässwörd-😀"
    assert mask(f"[{secret}]", [secret]) == "[***]"
    assert mask(f"[{secret}]".encode(), masking.as_bytes([secret])) == b"[***]"


def test_bytes_with_invalid_utf8_around_a_secret_are_masked_and_kept_as_they_were():
    data = b"\xff\xfe" + SECRET.encode() + b"\x00\x80"
    assert mask(data, masking.as_bytes([SECRET])) == b"\xff\xfe***\x00\x80"


def test_a_window_cut_through_a_secret_masks_the_part_inside():
    data = f"0123{SECRET}4567"
    cut = 4 + len(SECRET) // 2
    assert mask_window(data, cut, None, [SECRET]) == "***4567"
    assert mask_window(data, 0, cut, [SECRET]) == "0123***"


def test_result_json_has_every_string_masked_recursively_keys_included():
    value = {"summary": f"found {SECRET}", "findings": [{"detail": SECRET, SECRET: 1}], "tokens": 12, "ok": True}
    assert mask_json(value, [SECRET]) == {
        "summary": "found ***",
        "findings": [{"detail": "***", "***": 1}],
        "tokens": 12,
        "ok": True,
    }


def test_a_secret_split_across_every_possible_chunk_boundary_is_masked_in_the_stream():
    data = f"start {SECRET} middle {SECRET}{SECRET} end".encode()
    expected = b"start *** middle *** end"
    for size in range(1, len(data) + 1):
        # Two secrets side by side may come out as one mask or two, depending on the cut.
        assert stream(data, [SECRET], size).replace(b"******", b"***") == expected, size


def test_overlapping_secrets_split_across_chunks_leak_nothing():
    secrets = ["abcd", "cdXY"]
    for size in range(1, 12):
        out = stream(b"--abcdXY--", secrets, size)
        assert b"cd" not in out and b"XY" not in out and out.startswith(b"--") and out.endswith(b"--"), (size, out)


def test_the_stream_holds_back_no_more_than_one_secret_length():
    masker = StreamMasker([SECRET])
    out = masker.feed(b"x" * 100_000)
    assert len(out) >= 100_000 - len(SECRET)
    assert len(masker.pending) < len(SECRET)


def test_a_stream_with_no_secrets_passes_through_unchanged():
    assert stream(b"\xffplain\x00", [], 3) == b"\xffplain\x00"


@settings(max_examples=300, deadline=None)
@given(
    secrets=st.lists(st.text(alphabet="abcX", min_size=4, max_size=7), min_size=1, max_size=3),
    text=st.text(alphabet="abcX-", max_size=60),
    size=st.integers(1, 9),
)
def test_streaming_never_shows_a_secret_and_keeps_the_text_around_them(secrets, text, size):
    data = text.encode()
    out = stream(data, secrets, size)
    for secret in secrets:
        assert secret.encode() not in out
    # Masking as a whole and as a stream hide the same bytes (the stream may split a mask in two).
    assert out.replace(b"******", b"***") == mask(data, masking.as_bytes(secrets)).replace(b"******", b"***")
