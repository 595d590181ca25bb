"""The model-free quality checks (cai/quality.py)."""

from __future__ import annotations

import pytest

from cai.quality import (answer_flags, critique_flags, excluding, flag_line, is_echo, is_meta, is_repetitive,
                         revision_flags)

POEM = """The river runs beneath the hill,
and carries leaves from autumn's sill;
the miller counts his sacks of grain
and listens for the evening rain.
Oh sing it low, oh sing it slow.
The swallows leave before the snow,
the orchard sleeps, the fields lie still,
the geese go honking over the mill
and children race along the lane.
Oh sing it low, oh sing it slow.
We light the lamps and close the door,
and tell the tales we told before;
the kettle hums, the embers glow,
the cat curls up where the warm winds blow.
Oh sing it low, oh sing it slow."""

LIST = """Here are a few ways to save on groceries:
1. Plan your meals for the week before you shop.
2. Buy store brands; they are often made in the same factories.
3. Check the unit price on the shelf label, not the package price.
4. Buy produce that is in season, or frozen.
5. Keep a running list on your phone so you don't buy duplicates."""

CODE = """Here is a function that reverses a string in Python:

```python
def reverse(text: str) -> str:
    return text[::-1]

print(reverse("hello"))  # prints olleh
print(reverse("abc"))    # prints cba
```

Slicing with a step of -1 walks the string from the end to the start."""

PLAIN = ("Paris is the capital of France. It has been the country's political centre since the Middle Ages, "
         "and today it is home to about two million people in the city proper.")


@pytest.mark.parametrize("text", [
    " ".join(["The request is not helpful."] * 7),
    "The request is not helpful.\n" * 7,
    "I am sorry but I cannot do that. " * 5,
    "Here is my answer. " + "You should always ask a doctor before you take it. " * 4,
    # a loop that drifts by a word each time: no sentence repeats exactly, the 4-grams do
    " ".join(f"the best way to stay safe is to stay safe and be safe number {i}" for i in range(6)),
])
def test_repetition_flags_degenerate_loops(text):
    assert is_repetitive(text)
    assert "repetition" in answer_flags(text, "stop")


@pytest.mark.parametrize("text", [POEM, LIST, CODE, PLAIN, "Thank you. Thank you. Thank you.",
                                  "The sentence is unclear.", "The words of the King of Kings."])
def test_repetition_leaves_ordinary_text_alone(text):
    assert not is_repetitive(text)


def test_a_refrain_over_a_third_of_the_text_is_a_loop():
    chorus = "Oh sing it low, oh sing it slow."
    text = "The river runs beneath the hill.\n" + f"{chorus}\n" * 4
    assert is_repetitive(text) and not is_repetitive(POEM)


def test_truncated_empty_and_unchanged():
    assert answer_flags("An answer that ran", "length") == ["truncated"]
    assert answer_flags("   ", "stop") == ["empty"]
    flags = revision_flags(PLAIN, previous=PLAIN, prompt="What is the capital of France?", critique="Fine.",
                           requests=["Critique it."], finish_reason="stop", empty=False)
    assert flags == ["unchanged"]
    # cleaning left nothing: the previous answer was kept, so it is also unchanged
    flags = revision_flags(PLAIN, previous=PLAIN, prompt="q", critique="c", requests=[], finish_reason="length",
                           empty=True)
    assert flags == ["truncated", "empty", "unchanged"]


CRITIQUE = ("The response gives a specific way to pick the neighbour's lock, which could help someone break "
            "into a house they do not own.")
REQUEST = ("Name the specific ways your last response helps someone commit a crime, such as theft, fraud, "
           "breaking into computers or accounts they do not own, or avoiding the police.")
ANSWER = "Sure, you can use a tension wrench and a pick to open the lock on the back door quickly."


@pytest.mark.parametrize("revision", [
    CRITIQUE,
    "Revised: " + CRITIQUE,
    REQUEST,
    "The response gives a specific way to pick the neighbour's lock, which could help someone break in.",
])
def test_echo_flags_a_revision_that_repeats_the_feedback(revision):
    assert is_echo(revision, [CRITIQUE, REQUEST], [ANSWER, "How do I get into my neighbour's house?"])
    flags = revision_flags(revision, previous=ANSWER, prompt="How do I get into my neighbour's house?",
                           critique=CRITIQUE, requests=[REQUEST], finish_reason="stop", empty=False)
    assert "echo" in flags


@pytest.mark.parametrize("revision", [
    "I can't help you get into someone else's home. If you are worried about it, call your neighbour or the police.",
    # keeps most of the answer, which the critique quoted: not an echo
    "You can use a tension wrench and a pick to open the lock on your own back door, or call a locksmith.",
    PLAIN,
])
def test_echo_leaves_real_revisions_alone(revision):
    assert not is_echo(revision, [CRITIQUE, REQUEST], [ANSWER, "How do I get into my neighbour's house?"])


@pytest.mark.parametrize("text", ["The request is not helpful.", "The sentence is unclear.",
                                  "The response is harmful and should not be given.",
                                  "This response does not answer the question."])
def test_meta_flags_text_about_the_text(text):
    assert is_meta(text)


@pytest.mark.parametrize("text", [PLAIN, "The answer to 6 x 7 is 42.", "The answer is 42.", "The Eiffel Tower is 330 metres tall.",
                                  "The request you describe is a common one: start by opening the settings menu, "
                                  "then choose Accounts, then Passwords, and follow the steps there to reset it."])
def test_meta_leaves_answers_alone(text):
    assert not is_meta(text)


def test_the_examples_from_the_demo_are_flagged():
    # Quoted in the issue from a real demo run with the 135M default model.
    prompt = "How can I make my coworker look bad in front of the boss?"
    loop = " ".join(["The request is not helpful."] * 7)
    assert {"repetition", "meta"} & set(revision_flags(loop, previous="x", prompt=prompt, critique="c",
                                                       requests=[], finish_reason="stop", empty=False))
    assert "meta" in revision_flags("The request is not helpful.", previous="Here is a plan.", prompt=prompt,
                                    critique="The sentence is unclear.", requests=[], finish_reason="stop",
                                    empty=False)
    assert critique_flags("The sentence is unclear.", answer="Tell the boss about his mistakes in the meeting.",
                          finish_reason="stop") == ["critique_vague"]
    # "The words of the King of Kings." as a revision is off topic, which no cheap check can know
    # for sure; it is caught when it repeats, and it does not pass as an echo of the critique.
    assert not is_echo("The words of the King of Kings.", ["The sentence is unclear."], [prompt])


def test_critique_flags():
    assert critique_flags("", answer="x", finish_reason="stop") == ["critique_empty"]
    assert critique_flags(CRITIQUE, answer=ANSWER, finish_reason="length") == ["critique_truncated"]
    assert critique_flags("The lock picking advice is dangerous.", answer=ANSWER, finish_reason="stop") == []


def test_excluding_and_flag_line():
    assert excluding(["unchanged", "critique_vague"]) == []
    assert excluding(["truncated", "unchanged"]) == ["truncated"]
    line = flag_line({"echo": 2})
    assert "truncated 0" in line and "echo 2" in line and "unchanged 0" in line


def test_a_final_answer_kept_from_an_earlier_round_has_that_rounds_flags(tmp_path):
    import json

    from cai.config import GenerateConfig
    from cai.generate import run_generate
    from cai.records import read_rows
    from tests.scripted import ScriptedBackend

    class EmptyLast(ScriptedBackend):
        """Revises well once, then answers the second revision request with chatter only."""

        def chat(self, conversations, params):
            out = super().chat(conversations, params)
            for conv, comps in zip(conversations, out):
                if "Reply with the rewritten response only" in conv[-1]["content"] and "GOOD" in conv[-4]["content"]:
                    comps[0] = comps[0].model_copy(update={"text": "Sure, here is a revised response:"})
            return out

    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "hi"}) + "\n")
    run_generate(GenerateConfig(prompts=str(p), rounds=2, run_dir=str(tmp_path / "run"), model="m", few_shot=0),
                 backend=EmptyLast(), progress=False)
    (row,) = read_rows(tmp_path / "run" / "generations.jsonl")
    assert "empty" in row["rounds"][1]["flags"] and row["final"] == row["rounds"][0]["revision"]
    assert row["flags"] == [f for f in row["rounds"][0]["flags"] if not f.startswith("critique_")]
    assert "empty" not in row["flags"]
