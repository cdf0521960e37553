"""Data: formats, chat-template formatting, loss masks on prompt tokens, padding, the split, and
row-level errors."""

from __future__ import annotations

import hashlib
import json

import pytest
from transformers import AutoTokenizer

from tests.training.conftest import qa_rows
from trainforge.core.errors import InvalidArgument
from trainforge.core.training.data import (
    IGNORE_INDEX,
    PaddingCollator,
    check_rows,
    load_rows,
    prepare_data,
    split_indices,
    tokenize_row,
    write_jsonl,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompt_tokens_are_masked_and_completion_tokens_learned(tokenizer):
    row = {"prompt": "What color is the sky?", "completion": "The sky is blue."}
    example = tokenize_row(row, tokenizer, max_seq_length=64)
    prompt_text = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False,
                                                add_generation_prompt=True)
    prompt_len = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    full_text = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]},
                                               {"role": "assistant", "content": row["completion"]}], tokenize=False)
    assert tokenizer.decode(example.input_ids) == tokenizer.decode(tokenizer(full_text, add_special_tokens=False)
                                                                    ["input_ids"])
    assert example.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert example.labels[prompt_len:] == example.input_ids[prompt_len:]
    learned = tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert learned.split() == ["The", "sky", "is", "blue", ".", "<|im_end|>"]


def test_chat_rows_learn_every_assistant_turn_and_nothing_else(tokenizer):
    row = {"messages": [{"role": "system", "content": "yes"}, {"role": "user", "content": "Where is Paris?"},
                        {"role": "assistant", "content": "Paris is in France."},
                        {"role": "user", "content": "What do cows say?"},
                        {"role": "assistant", "content": "Cows say moo."}]}
    example = tokenize_row(row, tokenizer, max_seq_length=128)
    learned = [t for t in example.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(learned).split() == "Paris is in France . <|im_end|> Cows say moo . <|im_end|>".split()
    masked = [i for i, t in zip(example.input_ids, example.labels) if t == IGNORE_INDEX]
    assert "What do cows say ?" in tokenizer.decode(masked)


def test_truncation_and_padding(tokenizer):
    rows = [{"prompt": "What is two plus two?", "completion": "Two plus two is four."},
            {"prompt": "Where is Paris?", "completion": "Paris is in France."}]
    examples = [tokenize_row(r, tokenizer, max_seq_length=12) for r in rows]
    assert all(len(e.input_ids) <= 12 for e in examples)
    batch = PaddingCollator(tokenizer.pad_token_id)(examples)
    longest = max(len(e.input_ids) for e in examples)
    assert batch["input_ids"].shape == (2, longest)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        assert batch["attention_mask"][row, :n].tolist() == [1] * n
        assert batch["attention_mask"][row, n:].sum() == 0
        assert batch["labels"][row, n:].tolist() == [IGNORE_INDEX] * (longest - n)
        assert batch["input_ids"][row, n:].tolist() == [tokenizer.pad_token_id] * (longest - n)


def test_rows_missing_fields_are_named_by_row_number():
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "a"}, {"completion": "b"}, {"messages": []},
            {"messages": [{"role": "user", "content": "hi"}]}, {"prompt": 3, "completion": "x"}]
    with pytest.raises(InvalidArgument) as info:
        check_rows(rows)
    text = [v.description for v in info.value.violations]
    assert all(v.field == "training_data.path" for v in info.value.violations)
    assert text[0].startswith("row 2: missing field 'completion'")
    assert text[1].startswith("row 3: missing field 'prompt'")
    assert text[2] == "row 4: 'messages' must be a non-empty list"
    assert text[3] == "row 5: 'messages' has no assistant turn to learn"
    assert text[4].startswith("row 6: missing field 'prompt'")


def test_split_is_deterministic_disjoint_and_seeded():
    train, val = split_indices(100, 0.1, seed=42)
    assert (train, val) == split_indices(100, 0.1, seed=42)
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert split_indices(100, 0.1, seed=43)[1] != val
    assert split_indices(5, 0.0, seed=1) == ([0, 1, 2, 3, 4], [])
    assert len(split_indices(3, 0.1, seed=1)[1]) == 1  # at least one row held out


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_formats_load_through_datasets_and_hash_the_file(tmp_path, tokenizer, fmt):
    import pandas as pd

    rows = qa_rows(repeat=2)
    path = tmp_path / f"qa.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, rows)
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    assert load_rows(path, fmt, cache_dir=tmp_path / "cache") == rows
    data = prepare_data(path, fmt, tokenizer, max_seq_length=64, validation_split=0.25, seed=1,
                        cache_dir=tmp_path / "cache")
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (len(data.train), len(data.validation), data.rows, data.dropped) == (9, 3, 12, 0)


def test_a_malformed_file_is_an_invalid_argument(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    with pytest.raises(InvalidArgument) as info:
        load_rows(path, "jsonl", cache_dir=tmp_path / "cache")
    assert info.value.violations[0].field == "training_data.path"
    assert json.dumps(info.value.violations[0].description)
