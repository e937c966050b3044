"""Stop-string matching and incremental detokenization."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from tokenizers import Tokenizer

from dynamo.frontend.detokenize import StopMatcher, TextStream

_alphabet = st.sampled_from("ab c")


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = []
    for p in pieces:
        text, stopped = m.feed(p)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + m.flush(), False


@given(
    stops=st.lists(st.text(_alphabet, min_size=1, max_size=4), min_size=1, max_size=3),
    pieces=st.lists(st.text(_alphabet, max_size=5), max_size=12),
)
@example(stops=["a", " aa"], pieces=[" ", "a", "a"])
def test_output_is_the_text_up_to_the_first_stop(stops: list[str], pieces: list[str]) -> None:
    # The stream ends at the first piece after which a stop string is complete (as an engine
    # checks after each token), cut before the earliest match in the text so far: with stops
    # ["a", " aa"] and pieces " ", "a", "a" that is " " — " aa" is not complete yet.
    text = ""
    for piece in pieces:
        text += piece
        hits = [i for i in (text.find(s) for s in stops) if i != -1]
        if hits:
            assert run(stops, pieces) == (text[: min(hits)], True)
            return
    assert run(stops, pieces) == (text, False)


@given(
    stops=st.lists(st.text(_alphabet, min_size=1, max_size=4), min_size=1, max_size=3),
    pieces=st.lists(st.text(_alphabet, max_size=5), max_size=12),
)
def test_emitted_text_never_contains_a_stop(stops: list[str], pieces: list[str]) -> None:
    m = StopMatcher(stops)
    emitted = ""
    for p in pieces:
        text, stopped = m.feed(p)
        emitted += text
        assert not any(s in emitted for s in stops)
        if stopped:
            break


def test_held_prefix_is_released_when_it_is_not_a_stop() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("go ST") == ("go ", False)
    assert m.feed("ay") == ("STay", False)
    assert m.feed("ST") == ("", False)
    assert m.flush() == "ST"


def test_text_stream_never_splits_characters(tokenizer: Tokenizer) -> None:
    text = "naïve 😀 日本語 ok"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    stream = TextStream(tokenizer)
    deltas = [stream.push([i]) for i in ids]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) + stream.finish() == text


def test_text_stream_stops_and_skips_special_tokens(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("hello world. bye", add_special_tokens=False).ids
    stream = TextStream(tokenizer, stop=["."])
    out = stream.push([1, *ids[:2]]) + "".join(stream.push([i]) for i in ids[2:])
    assert stream.stopped
    assert out == "hello world"
    assert stream.push(ids) == "" and stream.finish() == ""


def test_text_stream_for_parsers_keeps_special_tokens_but_drops_eos(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("hello", add_special_tokens=False).ids
    stream = TextStream(tokenizer, skip_special_tokens=False, drop_ids=[2])
    out = "".join(stream.push([t]) for t in [1, *ids, 2]) + stream.finish()
    assert out == "<s>hello"  # <s> is special in the tiny tokenizer; </s> (EOS) is dropped
