"""What the built-in model quotes from a text, and how it summarizes one (real MiniLM)."""

from __future__ import annotations

import re

import pytest

from aistack.ai.backends import extractive, local
from aistack.ai.types import ChatRequest, Message

GUIDE = """# Onboarding guide

## Your first week

Welcome to the team. In your **first week**, set up your laptop with the
[standard image](https://wiki.example.com/image) and pair with your `onboarding buddy`.

- Request access to the source repositories before your first standup.
- Read the incident response guide.

| Tool | Owner |
| ---- | ----- |
| Pager | Operations team members on call |

```
rm -rf /tmp/cache && echo this is code not prose
```

<div class="callout">Raw HTML is not a statement of the guide.</div>

> A quotation from someone else is not the guide speaking either.

## Expense policy

Expense reports are filed monthly through the finance portal. Receipts older than 90
days are not reimbursed.
"""

PDF_PAGE = """Chapter 2: Structure handling 3
The parser is case sensitive and the comments begin with two dashes. Definitions
must follow the syntax below, and each definition ends with the keyword END on a
line of its own. Such strings are used in the functions described below and manip-
ulated by the library.
• On-line structure management that does not require any code generation.
• Thread safety. No global variables are used by the library at all.
2.2 Naming
Consider this definition of a group type."""

TOPICS = [
    "The payroll team closes the books on the last working day of every month.",
    "New laptops are ordered through the IT portal and arrive within five days.",
    "The staging database is refreshed from an anonymized production copy every night.",
    "Customer support answers tickets in English, German and Spanish around the clock.",
    "Visitors sign in at the front desk and wear a badge while in the building.",
    "The design system publishes a new version of its component library each quarter.",
    "Security patches for the web servers are applied within forty-eight hours.",
    "Team offsites are planned by the people team at least two months ahead.",
    "The mobile app is released to the stores every second Thursday after testing.",
    "Parking spaces in the garage are shared and booked through the office app.",
    "Interns are paired with a mentor who meets them weekly during their stay.",
    "The data warehouse keeps raw event logs for thirteen months before deletion.",
    "Quarterly planning starts with each team writing a one-page proposal.",
    "Travel to conferences needs a manager's approval and a short written report.",
    "The backup of the file servers is tested by a full restore twice a year.",
    "Job candidates meet at least four interviewers before an offer is made.",
]


@pytest.fixture(scope="module")
def model() -> local.ChatModel:
    return local.ChatModel(alias="default", model="extractive", options={})


def _summary(model: local.ChatModel, *context: str) -> str:
    request = ChatRequest(messages=(Message(role="system", content="Summarize."),),
                          context=context, task="summarize")
    return model.complete(request, timeout=60).text


def _texts(context: str) -> list[str]:
    return [statement.text for statement in extractive.statements([context])]


def test_statements_are_the_prose_of_paragraphs_and_list_items_without_markdown() -> None:
    texts = _texts(GUIDE)

    assert texts == [
        "Welcome to the team.",
        "In your first week, set up your laptop with the standard image and pair with your "
        "onboarding buddy.",
        "Request access to the source repositories before your first standup.",
        "Read the incident response guide.",
        "Expense reports are filed monthly through the finance portal.",
        "Receipts older than 90 days are not reimbursed.",
    ]


def test_text_from_a_pdf_loses_its_page_headers_bullets_and_line_hyphens() -> None:
    texts = _texts(PDF_PAGE)

    assert "Such strings are used in the functions described below and manipulated by the " \
           "library." in texts
    assert "On-line structure management that does not require any code generation." in texts
    assert "No global variables are used by the library at all." in texts
    assert not any("Chapter 2" in text or "Naming" in text or "•" in text for text in texts)
    assert texts[0].startswith("The parser is case sensitive")


@pytest.mark.parametrize(("paragraph", "count"), [
    ("Smith et al. found no effect. The trial was small.", 2),
    ("Use a tool, e.g. the CLI. It is faster.", 2),
    ("J. R. R. Tolkien wrote it. It sold well.", 2),
    ("Revenue grew 4.5 percent! Costs fell? They did.", 3),
    ("The p value was 0.016 (n = 17). Results held.", 2),
])
def test_sentences_split_at_their_ends_only(paragraph: str, count: int) -> None:
    assert len(extractive.sentences_split(paragraph)) == count


def test_a_summary_grows_with_the_document_from_three_to_eight_sentences() -> None:
    lengths = [extractive.summary_length(words) for words in (50, 600, 1_500, 4_000, 50_000)]

    assert lengths[0] == lengths[1] == 3
    assert lengths == sorted(lengths)
    assert lengths[-1] == 8


def test_a_markdown_summary_quotes_prose_in_order_and_cites_its_passage_once(
    model: local.ChatModel,
) -> None:
    summary = _summary(model, GUIDE)

    assert not re.search(r"[#*`|>]|\]\(|^- ", summary)
    assert summary.count("[1]") == 1 and summary.endswith(" [1]")
    sentences = re.split(r"(?<=\.) ", summary.removesuffix(" [1]"))
    assert len(sentences) == 3
    statements = _texts(GUIDE)
    positions = [statements.index(sentence) for sentence in sentences]
    assert positions == sorted(positions)


def test_each_passage_is_cited_once_after_its_last_sentence(model: local.ChatModel) -> None:
    summary = _summary(model, " ".join(TOPICS[:5]), " ".join(TOPICS[5:10]))

    # Both passages are quoted, the first's sentences before the second's, each cited once.
    assert summary.count("[1]") == 1 and summary.count("[2]") == 1
    assert re.fullmatch(r"[^\[\]]+ \[1\] [^\[\]]+ \[2\]", summary), summary


def test_a_long_document_gets_a_longer_summary_without_repeats(model: local.ChatModel) -> None:
    # About 4,000 words: every topic told many times in other words around it.
    filler = ("Further details on this point are kept in the team's handbook, which is "
              "reviewed by its owners every year and changed when practice changes.")
    paragraphs = [f"{topic} {filler}" for topic in TOPICS] * 12

    short = _summary(model, " ".join(TOPICS[:4]))
    long = _summary(model, "\n\n".join(paragraphs))

    long_sentences = re.split(r"(?<=\.) ", long.removesuffix(" [1]"))
    assert len(re.split(r"(?<=\.) ", short.removesuffix(" [1]"))) == 3
    assert 5 <= len(long_sentences) <= 8
    # Twelve copies of each paragraph, but no sentence is chosen twice.
    assert len(set(long_sentences)) == len(long_sentences)


def test_a_one_sentence_text_is_its_own_summary(model: local.ChatModel) -> None:
    assert _summary(model, "The cat sat on the mat.") == "The cat sat on the mat. [1]"


def test_the_model_streams_a_sentence_at_a_time(model: local.ChatModel) -> None:
    request = ChatRequest(messages=(Message(role="system", content="Summarize."),),
                          context=(" ".join(TOPICS[:6]),), task="summarize")

    chunks = list(model.stream(request, timeout=60))

    assert len(chunks) == 3
    assert "".join(chunk.text for chunk in chunks) == model.complete(request, timeout=60).text
    assert [chunk.usage is not None for chunk in chunks] == [False, False, True]


def test_a_quoted_sentence_cannot_cite_or_link_where_the_document_chose() -> None:
    texts = _texts("Read the policy \\[2\\]\\(https://phish.example/login\\) before you "
                   "travel. See [1] for the rest of it.")

    assert texts == ["Read the policy (2)(https://phish.example/login) before you travel.",
                     "See (1) for the rest of it."]


def test_a_document_with_nothing_to_quote_says_so_as_its_summary(
    model: local.ChatModel,
) -> None:
    table = "| Tool | Owner |\n| --- | --- |\n| Pager | Operations |\n\n# Heading\n\n- ok\n"

    assert _summary(model, table) == local.NOTHING_TO_SUMMARIZE
