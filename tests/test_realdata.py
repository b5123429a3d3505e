"""Real-data tasks with the real loaders on generated files: the models learn what the data holds."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from datagen import char_corpus, sentiment_csv, separable_images, word_corpus
from rnnbench.modules.cells import GRUCell, LSTMCell
from rnnbench.modules.models import SequenceModel
from rnnbench.run.train import TrainSettings, Trainer
from rnnbench.tasks.language_model import LanguageModelTask
from rnnbench.tasks.seq_image import SequentialImageTask
from rnnbench.tasks.text import TextClassificationTask


class Quiet:
    def log(self, row):
        pass

    def log_profile(self, step, profile):
        pass


def train(model, task, steps, lr=3e-3, eval_every=None, clip=1.0):
    settings = TrainSettings(max_steps=steps, eval_every=eval_every or steps, log_every=steps,
                             profile_every=0, clip=clip, progress=False)
    return Trainer(model, task, torch.optim.Adam(model.parameters(), lr=lr), None, settings, [Quiet()])


def test_char_lm_learns_far_below_unigram_perplexity(tmp_path):
    torch.manual_seed(0)
    task = LanguageModelTask(corpus=str(char_corpus(tmp_path / "text.txt")), level="char", bptt=30,
                             batch_size=16, eval_batch_size=8)
    unigram_bpc = task.memoryless_baseline / math.log(2)
    model = SequenceModel(task.spec, LSTMCell, 64, embedding_size=16)
    result = train(model, task, 300, lr=1e-2).fit()
    bpc = result.final["val/bits_per_char"]
    assert bpc < 0.5 * unigram_bpc, (bpc, unigram_bpc)


def test_carried_state_beats_resetting_it(tmp_path):
    """Evaluation with the state carried from window to window is better than starting every window
    from zeros (the first characters of a window then have no context)."""
    torch.manual_seed(0)
    task = LanguageModelTask(corpus=str(char_corpus(tmp_path / "text.txt")), level="char", bptt=10,
                             batch_size=16, eval_batch_size=8)
    model = SequenceModel(task.spec, LSTMCell, 64, embedding_size=16)
    trainer = train(model, task, 300, lr=1e-2)
    trainer.fit()
    model.eval()
    with torch.no_grad():
        carried = task.evaluate(lambda b, s: model(b.inputs, b.lengths, s), "val")
        reset = task.evaluate(lambda b, s: model(b.inputs, b.lengths, None), "val")
    assert carried["loss"] < reset["loss"] - 0.05, (carried["loss"], reset["loss"])


def test_word_lm_with_tied_embeddings_and_the_recipe_dropouts(tmp_path):
    torch.manual_seed(0)
    task = LanguageModelTask(corpus=str(word_corpus(tmp_path / "words")), bptt=12, batch_size=8,
                             eval_batch_size=4)
    model = SequenceModel(task.spec, GRUCell, 32, num_layers=2, embedding_size=32, tie_weights=True,
                          dropout=0.2, embedding_dropout=0.2, output_dropout=0.2)
    assert model.head.weight is model.embedding.weight
    result = train(model, task, 200, lr=1e-2).fit()
    assert result.final["val/perplexity"] < 0.6 * math.exp(task.memoryless_baseline)


def test_tied_weights_with_different_sizes_is_a_clear_error(tmp_path):
    task = LanguageModelTask(corpus=str(word_corpus(tmp_path / "words")), bptt=12, batch_size=8)
    with pytest.raises(ValueError, match=r"model.tie_weights=true needs model.embedding_size \(16\) == "
                                         r"model.hidden_size x directions \(32\)"):
        SequenceModel(task.spec, LSTMCell, 32, embedding_size=16, tie_weights=True)


@pytest.mark.parametrize("cell", [LSTMCell, GRUCell])
def test_row_wise_classifier_beats_chance_by_a_wide_margin(tmp_path, cell):
    torch.manual_seed(0)
    folder = separable_images(tmp_path / "fashion-mnist")
    task = SequentialImageTask(dataset=str(folder), mode="row", batch_size=32, eval_batch_size=100)
    model = SequenceModel(task.spec, cell, 32)
    result = train(model, task, 150, lr=1e-2).fit()
    assert result.final["val/accuracy"] > 0.6  # chance: 0.1


@pytest.mark.parametrize("arch", [dict(bidirectional=True), dict(bidirectional=True, pyramid=True, num_layers=3)])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_padded_and_unpadded_give_the_same_predictions(tmp_path, arch, pooling):
    torch.manual_seed(0)
    task = TextClassificationTask(dataset=str(sentiment_csv(tmp_path / "sent")), batch_size=16)
    model = SequenceModel(task.spec, LSTMCell, 16, pooling=pooling, **arch).eval()
    batch = task.train_batch()
    assert batch.lengths is not None and batch.lengths.min() < batch.lengths.max()
    with torch.no_grad():
        together, _ = model(batch.inputs, batch.lengths)
        for b, length in enumerate(batch.lengths.tolist()):
            alone, _ = model(batch.inputs[:length, b:b + 1], torch.tensor([length]))
            torch.testing.assert_close(together[b], alone[0], atol=1e-5, rtol=1e-4)


def test_text_classifier_learns_sentiment(tmp_path):
    torch.manual_seed(0)
    task = TextClassificationTask(dataset=str(sentiment_csv(tmp_path / "sent")), batch_size=16, bucket=True)
    model = SequenceModel(task.spec, functools.partial(GRUCell), 32, bidirectional=True, pooling="max")
    result = train(model, task, 150, lr=1e-2).fit()
    assert result.final["val/accuracy"] > 0.9
    assert set(k for k in result.final if k.startswith("val/acc_class/")) == {"val/acc_class/neg", "val/acc_class/pos"}
