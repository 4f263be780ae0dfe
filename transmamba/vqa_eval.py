"""Questions with checkable answers about the offline images, and their exact-match score: our GQA/VQA stand-in.

No GQA/VQAv2/VizWiz/ScienceQA data exists offline, so a vision-language model is scored on templated questions
about Fashion-MNIST (Debian ``dataset-fashion-mnist``; scikit-learn digits as the fallback) whose answers follow
from the class label alone, so they are exact:

======================  ==========================================================  =======================
kind                    question (Fashion-MNIST)                                    answer
======================  ==========================================================  =======================
``class``               What is the item in the image?                              the class name
``yes_no``              Is this a {candidate}?  (the true class for every other      yes / no (balanced)
                        image, else a seeded other class)
``attribute_yes_no``    Is the item upper-body clothing?                            yes / no
``attribute``           Which kind of item is it: top, bottom, dress, footwear or   the category
                        bag?
======================  ==========================================================  =======================

Every question ends with LLaVA-1.5's short-answer instruction ("Answer the question using a single word or
phrase.", as it uses for GQA and VQAv2). The attribute table is ours (:data:`FASHION_CATEGORIES`):
t-shirt/top, pullover, coat and shirt are ``top`` (upper-body clothing), trouser ``bottom``, dress ``dress``,
sandal, sneaker and ankle boot ``footwear``, bag ``bag``. For digits the class is the digit, yes/no asks "Is
this the digit {candidate}?", and the attribute is its parity ("Is the digit even?", "Is the digit even or odd?").

The held-out questions come from the image source's **test** split (never trained on); training conversations
with the same templates come from its train split, as GQA's and VQAv2's train/test splits share question types.
``class_repeats`` > 1 asks the class question that many times per training image (the Trainer shuffles the
rows, so this is a sampling weight): the class name is the one answer that names what the image shows, and one
question in four left a 270M teacher unable to name any class.

Scoring (:func:`normalize_answer`, :func:`exact_match`): lower-case; cut at the first newline; drop a trailing
"." "!" or "?", the articles a/an/the, and a leading "it is"/"this is"; collapse white space. A prediction is
right when its normalised form equals the normalised answer. ``chance`` is the accuracy of the best constant
answer per question kind (the majority answer), the honest floor for "well above chance".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from transmamba.data import FASHION_MNIST_DIR, FASHION_MNIST_LABELS, load_image_dataset

SHORT_ANSWER = "Answer the question using a single word or phrase."
QUESTION_KINDS = ("class", "yes_no", "attribute_yes_no", "attribute")
SOURCES = ("default", "fashion_mnist", "digits")

FASHION_NAMES = [name.lower() for name in FASHION_MNIST_LABELS]
FASHION_CATEGORIES = {
    "t-shirt/top": "top",
    "trouser": "bottom",
    "pullover": "top",
    "dress": "dress",
    "coat": "top",
    "sandal": "footwear",
    "shirt": "top",
    "sneaker": "footwear",
    "bag": "bag",
    "ankle boot": "footwear",
}


@dataclass(frozen=True)
class QuestionTemplates:
    """The four question templates of one image source and the attribute of each class."""

    names: tuple[str, ...]
    attributes: tuple[str, ...]  # per class: its category (fashion) or parity (digits)
    class_question: str
    yes_no_question: str  # {candidate}: a class name, {article}: a/an before it
    attribute_yes_no_question: str
    attribute_yes: str  # the attribute value for which attribute_yes_no is "yes"
    attribute_question: str


FASHION = QuestionTemplates(
    names=tuple(FASHION_NAMES),
    attributes=tuple(FASHION_CATEGORIES[name] for name in FASHION_NAMES),
    class_question="What is the item in the image?",
    yes_no_question="Is this {article} {candidate}?",
    attribute_yes_no_question="Is the item upper-body clothing?",
    attribute_yes="top",
    attribute_question="Which kind of item is it: top, bottom, dress, footwear or bag?",
)
DIGITS = QuestionTemplates(
    names=tuple(str(i) for i in range(10)),
    attributes=tuple("even" if i % 2 == 0 else "odd" for i in range(10)),
    class_question="Which digit is this?",
    yes_no_question="Is this the digit {candidate}?",
    attribute_yes_no_question="Is the digit even?",
    attribute_yes="even",
    attribute_question="Is the digit even or odd?",
)


@dataclass(frozen=True)
class Question:
    kind: str
    question: str  # without the short-answer instruction
    answer: str


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def questions_for_label(label: int, index: int, templates: QuestionTemplates, rng: np.random.Generator):
    """The four questions about an image of class ``label``; ``index`` (even: the true class) balances yes/no."""
    name, attribute = templates.names[label], templates.attributes[label]
    if index % 2 == 0:
        candidate = name
    else:
        others = [n for n in templates.names if n != name]
        candidate = others[int(rng.integers(len(others)))]
    yes_no = templates.yes_no_question.format(candidate=candidate, article=_article(candidate))
    return [
        Question("class", templates.class_question, name),
        Question("yes_no", yes_no, "yes" if candidate == name else "no"),
        Question(
            "attribute_yes_no",
            templates.attribute_yes_no_question,
            "yes" if attribute == templates.attribute_yes else "no",
        ),  # fmt: skip
        Question("attribute", templates.attribute_question, attribute),
    ]


def templates_for(source: str) -> tuple[str, QuestionTemplates]:
    """The resolved source name and its templates (``default``: Fashion-MNIST when installed, else digits)."""
    if source not in SOURCES:
        raise ValueError(f"Unknown question source {source!r}; choose one of {', '.join(SOURCES)}.")
    if source == "default":
        source = "fashion_mnist" if FASHION_MNIST_DIR.is_dir() else "digits"
    return source, FASHION if source == "fashion_mnist" else DIGITS


def question_rows(images: Dataset, templates: QuestionTemplates, seed: int = 0, class_repeats: int = 1) -> Dataset:
    """One row per (image, question): ``image``, ``label``, ``kind``, ``question``, ``answer`` and a LLaVA
    ``conversations`` column (the question with the short-answer instruction, the short answer); the class
    question ``class_repeats`` times per image."""
    if class_repeats < 1:
        raise ValueError(f"class_repeats must be at least 1, got {class_repeats}.")
    rng = np.random.default_rng(seed)
    image_index, kinds, texts, answers, conversations = [], [], [], [], []
    for index, label in enumerate(images["label"]):
        questions = questions_for_label(int(label), index, templates, rng)
        for question in questions[:1] * (class_repeats - 1) + questions:
            image_index.append(index)
            kinds.append(question.kind)
            texts.append(question.question)
            answers.append(question.answer)
            prompt = f"<image>\n{question.question}\n{SHORT_ANSWER}"
            conversations.append([{"from": "human", "value": prompt}, {"from": "gpt", "value": question.answer}])
    rows = images.select(image_index)  # an index mapping: the image bytes are not copied
    columns = {"kind": kinds, "question": texts, "answer": answers, "conversations": conversations}
    for column, values in columns.items():
        rows = rows.add_column(column, values)
    return rows


def vqa_splits(source: str = "default", max_train_images: int | None = None, max_eval_images: int = 100,
               seed: int = 0, class_repeats: int = 1) -> dict[str, Dataset]:  # fmt: skip
    """``train`` (questions on ``max_train_images`` shuffled train images, the class question ``class_repeats``
    times each) and ``test`` (held out: the first test images, each question once)."""
    source, templates = templates_for(source)
    images = load_image_dataset(source)
    train, test = images["train"], images["test"]
    if max_train_images is not None:
        train = train.shuffle(seed=seed).select(range(min(max_train_images, len(train))))
    test = test.select(range(min(max_eval_images, len(test))))
    return {"train": question_rows(train, templates, seed, class_repeats),
            "test": question_rows(test, templates, seed + 1)}  # fmt: skip


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_LEAD = re.compile(r"^(it is|it's|this is|the answer is)\s+")


def normalize_answer(text: str) -> str:
    """The normal form both sides of an exact match are compared in (see the module docstring)."""
    text = text.strip().split("\n", 1)[0].lower().strip()
    text = _LEAD.sub("", text)
    text = text.rstrip(".!?").strip()
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Fraction of predictions whose normal form equals the reference's (0.0 for no predictions)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references.")
    if not predictions:
        return 0.0
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True))
    return hits / len(predictions)


def score(predictions: list[str], answers: list[str], kinds: list[str]) -> dict[str, float | int]:
    """Exact match overall and per question kind, with each kind's majority-answer chance level."""
    result: dict[str, float | int] = {"exact_match": exact_match(predictions, answers), "questions": len(answers)}
    chance_hits = 0
    for kind in QUESTION_KINDS:
        picked = [i for i, k in enumerate(kinds) if k == kind]
        if not picked:
            continue
        refs = [answers[i] for i in picked]
        result[f"exact_match/{kind}"] = exact_match([predictions[i] for i in picked], refs)
        majority = Counter(normalize_answer(r) for r in refs).most_common(1)[0][1]
        result[f"chance/{kind}"] = majority / len(refs)
        chance_hits += majority
    result["chance"] = chance_hits / len(answers) if answers else 0.0
    return result
