"""Evaluation inputs: the corpus layout's defaults, another corpus's features without audio."""

from __future__ import annotations

import pytest

from ssl_speech.data.corpus import load_corpus
from ssl_speech.eval.inputs import EvalInputs

NUM_PHONES = 40


def test_inputs_default_to_the_corpus_layout(tiny_corpus, monkeypatch):
    inputs = EvalInputs.resolve(root=tiny_corpus)
    assert inputs.alignments == tiny_corpus / "alignments.txt"
    assert inputs.phone_names[0] == "sil" and len(inputs.phone_names) == NUM_PHONES
    assert inputs.train_split == tiny_corpus / "splits" / "train.txt"
    assert set(inputs.phone_test_sets()) == {"test", "heldout_speakers"}
    assert inputs.abx_items == {"dev": tiny_corpus / "abx" / "dev.item"}
    needed = {u.id for u in inputs.utterances_needed()}
    lists = ("train", "test", "test_heldout_speakers", "dev")
    assert needed == {u.id for s in lists for u in load_corpus(root=tiny_corpus, split=s)}
    named = EvalInputs.resolve(root=tiny_corpus, abx_items=["test", tiny_corpus / "abx" /
                                                            "dev.item"])
    assert list(named.abx_items) == ["test", "dev"]
    with pytest.raises(FileNotFoundError, match="nope"):
        EvalInputs.resolve(root=tiny_corpus, test_split="nope")
    with pytest.raises(FileNotFoundError, match="missing.item"):
        EvalInputs.resolve(root=tiny_corpus, abx_items=["missing"])
    # no corpus given: the embedded corpus
    from ssl_speech.data import synthetic

    monkeypatch.setattr(synthetic, "ensure_corpus", lambda *args, **kwargs: tiny_corpus)
    assert EvalInputs.resolve().root == tiny_corpus


def test_alignments_and_list_files_alone_need_no_corpus(tmp_path, tiny_corpus):
    inputs = EvalInputs.resolve(alignments=tiny_corpus / "alignments.txt",
                                train_split=tiny_corpus / "splits" / "train.txt",
                                test_split=tiny_corpus / "splits" / "test.txt")
    assert inputs.source is None and not inputs.has_audio and inputs.root is None
    assert inputs.train_ids() == [u.id for u in load_corpus(root=tiny_corpus, split="train")]
    assert set(inputs.phone_test_sets()) == {"test"} and inputs.abx_items == {}
    with pytest.raises(ValueError, match="pass the corpus directory"):
        inputs.utterances_needed(("phone_probe",))
    with pytest.raises(FileNotFoundError, match="a split name needs the corpus"):
        EvalInputs.resolve(alignments=tiny_corpus / "alignments.txt", test_split="dev2")
