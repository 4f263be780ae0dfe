"""The held-out questions (our GQA/VQA stand-in) and their exact-match metric, on hand-made cases; and the
chat-template prompt path of the conversation encoder against the fixed LLaVA-1.5 prompt."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image
from huggingface_hub import ModelCard
from PIL import Image as PILImage
from test_llava_distill import tiny_processor
from transmamba.conversion.compose_gemma_llava import GEMMA_CHAT_TEMPLATE
from transmamba.model_cards.vlm import build_vlm_card

from transmamba.image_text import LlavaConversationEncoder
from transmamba.vqa_eval import (
    DIGITS,
    FASHION,
    FASHION_CATEGORIES,
    SHORT_ANSWER,
    exact_match,
    normalize_answer,
    question_rows,
    questions_for_label,
    score,
    templates_for,
)


def test_questions_about_a_sneaker_and_a_coat():
    rng = np.random.default_rng(0)
    sneaker = questions_for_label(FASHION.names.index("sneaker"), 0, FASHION, rng)  # even index: the true class
    assert [(q.kind, q.question, q.answer) for q in sneaker] == [
        ("class", "What is the item in the image?", "sneaker"),
        ("yes_no", "Is this a sneaker?", "yes"),
        ("attribute_yes_no", "Is the item upper-body clothing?", "no"),
        ("attribute", "Which kind of item is it: top, bottom, dress, footwear or bag?", "footwear"),
    ]
    coat = questions_for_label(FASHION.names.index("coat"), 1, FASHION, rng)  # odd index: another class
    assert coat[1].answer == "no" and coat[1].question != "Is this a coat?"
    assert coat[1].question.removeprefix("Is this ").removesuffix("?").split(" ", 1)[1] in FASHION.names
    assert (coat[2].answer, coat[3].answer) == ("yes", "top")
    ankle_boot = questions_for_label(FASHION.names.index("ankle boot"), 2, FASHION, rng)
    assert ankle_boot[1].question == "Is this an ankle boot?"


def test_attribute_table_covers_every_class_and_digits_use_parity():
    assert set(FASHION_CATEGORIES) == set(FASHION.names)
    assert sorted(n for n, c in FASHION_CATEGORIES.items() if c == "top") == [
        "coat",
        "pullover",
        "shirt",
        "t-shirt/top",
    ]
    seven = questions_for_label(7, 0, DIGITS, np.random.default_rng(0))
    assert [q.answer for q in seven] == ["7", "yes", "no", "odd"]
    with pytest.raises(ValueError, match="Unknown question source"):
        templates_for("cifar10")


def test_question_rows_hold_four_llava_conversations_per_image():
    features = Features({"image": Image(), "label": ClassLabel(names=list(FASHION.names))})
    images = [np.full((8, 8), 40 * i, dtype=np.uint8) for i in range(3)]
    rows = question_rows(Dataset.from_dict({"image": images, "label": [7, 4, 8]}, features=features), FASHION)
    assert len(rows) == 12 and rows["kind"][:4] == ["class", "yes_no", "attribute_yes_no", "attribute"]
    assert rows["label"] == [7] * 4 + [4] * 4 + [8] * 4
    human, gpt = rows[10]["conversations"]  # the bag's attribute question
    assert human["value"] == f"<image>\nIs the item upper-body clothing?\n{SHORT_ANSWER}" and gpt["value"] == "no"
    assert np.asarray(rows[4]["image"]).max() == 40  # the rows point at their own image
    answers = [r["answer"] for r in rows if r["kind"] == "yes_no"]
    assert answers == ["yes", "no", "yes"]  # balanced by image index


def test_class_repeats_weights_the_class_question_and_keeps_the_rest():
    features = Features({"image": Image(), "label": ClassLabel(names=list(FASHION.names))})
    images = Dataset.from_dict({"image": [np.zeros((8, 8), dtype=np.uint8)] * 2, "label": [7, 4]}, features=features)
    once, thrice = question_rows(images, FASHION), question_rows(images, FASHION, class_repeats=3)
    assert len(thrice) == 12 and thrice["kind"][:6] == ["class"] * 3 + ["yes_no", "attribute_yes_no", "attribute"]
    assert thrice["answer"][:3] == ["sneaker"] * 3 and thrice["label"] == [7] * 6 + [4] * 6
    assert [r["question"] for r in thrice if r["kind"] != "class"] == [
        r["question"] for r in once if r["kind"] != "class"
    ]  # same seeded yes/no candidates
    with pytest.raises(ValueError, match="class_repeats must be at least 1"):
        question_rows(images, FASHION, class_repeats=0)


@pytest.mark.parametrize(
    ("prediction", "reference", "same"),
    [
        ("Sneaker.", "sneaker", True),
        ("  It is a sneaker!\nMore text", "sneaker", True),
        ("The T-shirt/top", "t-shirt/top", True),
        ("Yes", "yes", True),
        ("ankle  boot", "ankle boot", True),
        ("boot", "ankle boot", False),
        ("yes, it is", "yes", False),
        ("sneakers", "sneaker", False),
        ("", "no", False),
    ],
)
def test_normalisation(prediction, reference, same):
    assert (normalize_answer(prediction) == normalize_answer(reference)) is same


def test_exact_match_and_score_with_chance_levels():
    assert exact_match([], []) == 0.0
    assert exact_match(["Yes.", "no", "bag"], ["yes", "yes", "bag"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        exact_match(["a", "b"], ["a"])
    predictions = ["sneaker", "coat", "yes", "yes", "no", "no"]
    answers = ["sneaker", "sneaker", "yes", "no", "no", "no"]
    kinds = ["class", "class", "yes_no", "yes_no", "attribute_yes_no", "attribute_yes_no"]
    result = score(predictions, answers, kinds)
    assert result["exact_match"] == pytest.approx(4 / 6) and result["questions"] == 6
    assert result["exact_match/class"] == 0.5 and result["exact_match/yes_no"] == 0.5
    assert result["exact_match/attribute_yes_no"] == 1.0 and "exact_match/attribute" not in result
    assert result["chance/class"] == 1.0 and result["chance/yes_no"] == 0.5  # majority answer per kind
    assert result["chance"] == pytest.approx(5 / 6)


def chat_processor():
    conversation = ["Is this a bag ?", "yes", "no"]
    processor = tiny_processor(conversation + ["user model"])
    processor.tokenizer.add_tokens(["<start_of_turn>", "<end_of_turn>"], special_tokens=True)
    processor.chat_template = GEMMA_CHAT_TEMPLATE.replace("{{ image_token }}", "<image>")
    return processor


def test_chat_template_builds_the_same_answer_labels_as_the_fixed_prompt():
    processor = chat_processor()
    image = PILImage.new("RGB", (16, 16), color=(120, 30, 200))
    conversation = [{"from": "human", "value": "<image>\nIs this a bag ?"}, {"from": "gpt", "value": "yes"},
                    {"from": "human", "value": "Is this a bag ?"}, {"from": "gpt", "value": "no"}]  # fmt: skip
    chat = LlavaConversationEncoder(processor)  # auto: the processor has a template
    fixed = LlavaConversationEncoder(processor, prompt_format="llava")
    assert chat.chat and not fixed.chat
    rows = {name: encoder.encode(image, conversation) for name, encoder in (("chat", chat), ("fixed", fixed))}
    tokenizer, eos, end = (
        processor.tokenizer,
        processor.tokenizer.eos_token_id,
        processor.tokenizer.convert_tokens_to_ids("<end_of_turn>"),
    )
    answer_ids = {}
    for name, row in rows.items():
        assert len(row["input_ids"]) == len(row["labels"])
        kept = [(i, t) for i, (t, label) in enumerate(zip(row["input_ids"], row["labels"], strict=True))
                if label != -100]  # fmt: skip
        assert all(row["labels"][i] == t for i, t in kept)  # labels copy the answer tokens
        answer_ids[name] = [t for _, t in kept]
    # The answers' words are the same tokens; only the closing marker differs (</s> vs <end_of_turn>).
    words = {name: [t for t in ids if t not in (eos, end)] for name, ids in answer_ids.items()}
    assert words["chat"] == words["fixed"] == tokenizer(" yes no", add_special_tokens=False)["input_ids"]
    assert answer_ids["fixed"].count(eos) == 2 and eos not in answer_ids["chat"]
    assert answer_ids["chat"].count(end) == 2 and tokenizer.unk_token_id not in answer_ids["chat"]
    # The chat path is exactly the template's rendering, tokenised once (one BOS, the image expanded once).
    turns = [("user", "<image>\nIs this a bag ?"), ("assistant", "yes"), ("user", "Is this a bag ?"),
             ("assistant", "no")]  # fmt: skip
    messages = [{"role": role, "content": text} for role, text in turns]
    rendered = processor.apply_chat_template(messages, tokenize=False)
    whole = processor(images=image, text=rendered, add_special_tokens=False)["input_ids"][0]
    assert rows["chat"]["input_ids"] == list(whole)
    assert rows["chat"]["input_ids"].count(tokenizer.bos_token_id) == 1
    assert (rows["chat"]["pixel_values"] == rows["fixed"]["pixel_values"]).all()


def test_prompt_only_ends_with_the_assistant_cue_and_stops_at_end_of_turn():
    processor = chat_processor()
    image = PILImage.new("RGB", (16, 16))
    encoder = LlavaConversationEncoder(processor)
    prompt = encoder.encode(image, [{"from": "human", "value": "Is this a bag ?"}, {"from": "gpt", "value": "yes"}],
                            prompt_only=True)  # fmt: skip
    text = processor.tokenizer.decode(prompt["input_ids"])
    assert text.split()[-2:] == ["<start_of_turn>", "model"] and "yes" not in text and set(prompt["labels"]) == {-100}
    assert encoder.stop_token_ids[0] == processor.tokenizer.eos_token_id and len(encoder.stop_token_ids) == 2
    with pytest.raises(ValueError, match="prompt_format must be one of"):
        LlavaConversationEncoder(processor, prompt_format="chatml")
    processor.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        LlavaConversationEncoder(processor, prompt_format="chat_template")


def test_vlm_card_puts_the_measured_exact_match_in_model_index(tmp_path):
    rows = {
        "teacher (projector aligned)": {"eval": {"exact_match": 0.8}, "budget": "200 steps"},
        "distilled-seed0": {"eval": {"exact_match": 0.625}, "budget": "100 steps x batch 8"},
        "ce-scratch-seed0": {"budget": "not run"},
    }
    facts = {"teacher_layers": 18, "student_layers": 6, "machine": "2-core CPU", "repo": "me/x", "gemma": True}
    card = build_vlm_card(rows, "distilled-seed0", "teacher-aligned", facts)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")  # offline round trip (validate() needs the Hub)
    (result,) = loaded.data.eval_results
    assert (result.metric_type, result.metric_value, result.task_type) == ("exact_match", 0.625,
                                                                           "visual-question-answering")  # fmt: skip
    assert loaded.data.pipeline_tag == "image-text-to-text" and loaded.data.license == "gemma"
    assert "| distilled-seed0 (this model) | 62.5 % |" in loaded.text and "ce-scratch" not in loaded.text
    assert "Gemma Terms of Use" in loaded.text and "not available offline" in loaded.text
    with pytest.raises(ValueError, match="No measured exact match"):
        build_vlm_card(rows, "ce-scratch-seed0", "teacher-aligned", facts)
