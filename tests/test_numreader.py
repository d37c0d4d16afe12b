"""The stamped-number reader: synthetic training data, the shipped weights, and training."""

import numpy as np
import pytest
from safetensors import safe_open

from herbscan.labels.numreader import WEIGHTS, NumberReader, default_readers, synthetic_pool, train
from herbscan.labels.numsynth import HEIGHT, make_batch, random_number, render_number


def test_synthetic_numbers_are_repeatable_grey_bands():
    a = render_number("V 87317", np.random.default_rng(5))
    b = render_number("V 87317", np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape[0] == HEIGHT and np.array_equal(a, b)
    assert a.min() < 80 and np.median(a) > 180  # dark ink on light paper
    texts = [random_number(np.random.default_rng(i)) for i in range(300)]
    assert all(3 <= sum(c.isdigit() for c in t) <= 7 for t in texts)
    assert any(t[0].isalpha() for t in texts) and any(t.isdigit() for t in texts)
    images, labels = make_batch(4, np.random.default_rng(0))
    assert len(images) == 4 and all(" " not in t for t in labels)


def test_pool_is_the_same_in_one_process_or_two():
    one = synthetic_pool(30, seed=3, workers=1)
    two = synthetic_pool(30, seed=3, workers=2)
    assert one[1] == two[1] and all(np.array_equal(a, b) for a, b in zip(one[0], two[0]))


@pytest.mark.parametrize("k", range(len(WEIGHTS)))
def test_shipped_readers_read_fresh_synthetic_numbers(k):
    reader = default_readers()[k]
    assert reader.weights == WEIGHTS[k] and WEIGHTS[k].is_file()
    images, texts = make_batch(200, np.random.default_rng(2024))  # not the training seeds
    reads = reader.read(images)
    acc = np.mean([r.text == t for r, t in zip(reads, texts, strict=True)])
    assert acc >= 0.9, acc
    right = [r.conf for r, t in zip(reads, texts, strict=True) if r.text == t]
    wrong = [r.conf for r, t in zip(reads, texts, strict=True) if r.text != t]
    assert all(0.0 <= c <= 1.0 for c in right + wrong)
    if wrong:
        assert np.mean(right) > np.mean(wrong)  # confidence means something
    assert reader.read([]) == []


def test_shipped_readers_are_different_models_trained_by_their_recipes():
    from itertools import combinations

    from herbscan.labels.numreader import RECIPES

    assert len(RECIPES) == len(WEIGHTS) == len(default_readers()) >= 2
    for reader, recipe in zip(default_readers(), RECIPES, strict=True):
        meta = reader._meta()
        assert (int(meta["seed"]), float(meta["old_style"])) == (
            recipe["seed"],
            recipe["old_style"],
        )
    states = [reader.model_.state_dict() for reader in default_readers()]
    for a, b in combinations(states, 2):
        assert a.keys() == b.keys()
        assert any(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_train_writes_loadable_safetensors(tmp_path):
    out = tmp_path / "reader.safetensors"
    result = train(out, samples=96, steps=3, batch=16, log_every=0)
    assert 0.0 <= result["synthetic_accuracy"] <= 1.0 and out.is_file()
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["steps"] == "3" and meta["samples"] == "96" and "hidden" in meta["config"]
    reads = NumberReader(out).read([render_number("12345", np.random.default_rng(0))])
    assert len(reads) == 1 and isinstance(reads[0].text, str)
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_weights_say_what_to_do(tmp_path):
    from herbscan.errors import HerbscanError

    with pytest.raises(HerbscanError, match="train_number_reader"):
        NumberReader(tmp_path / "none.safetensors").read([np.full((32, 64), 255, np.uint8)])


def test_decoding_keeps_series_letters_before_the_digits():
    from herbscan.labels.numreader import _decode
    from herbscan.labels.numsynth import ALPHABET

    def frames(seq, second=None):
        """Log-probabilities of a frame sequence ("-" blank), with a runner-up per frame."""
        logp = np.full((len(seq), len(ALPHABET) + 1), 1e-4)
        for t, c in enumerate(seq):
            logp[t, 0 if c == "-" else ALPHABET.index(c) + 1] = 0.6
            if second and t in second:
                logp[t, ALPHABET.index(second[t]) + 1] = 0.3
        return np.log(logp / logp.sum(1, keepdims=True))

    # a worn 0 and 6 look most like C and G: inside the digits the runner-up digit is taken
    read = _decode(frames("V-1-C-5-7-G-7", second={4: "0", 10: "6"}))
    assert read.text == "V105767" and 0.25 < read.conf < 0.4
    assert _decode(frames("CA-1-2-3-4")).text == "CA1234"  # a two-letter series stays
    assert _decode(frames("1-1-2-2")).text == "1122"  # repeats need a blank between
    # letters the reader is sure of where digits must be: words, not a number
    assert _decode(frames("ABC-1-2")).text == ""
    assert _decode(frames("B-O-T-A-N-I-C-A-L")).text == ""
    assert _decode(frames("B-C-")).text == ""  # letters alone: no number
    assert _decode(frames("----")).text == ""


def test_old_style_figures_set_a_short_one_and_drop_the_descending_digits():
    from herbscan.labels.numsynth import _figure_styles, _font

    font = _font(None, 64)
    seen = set()
    for seed in range(40):
        fonts, drops = _figure_styles("V149385", font, None, 64, np.random.default_rng(seed), 1.0)
        assert fonts[0] is font and fonts[6] is font and fonts[5] is font  # V, 5 and 8 as set
        assert fonts[1].size < font.size and round(0.6 * 64) <= fonts[1].size <= round(0.8 * 64)
        assert drops[0] == drops[1] == drops[5] == 0.0 and 0.0 <= drops[2] <= 0.25
        seen.add(drops[2] > 0)
    assert seen == {True, False}  # the short 1 alone, or full old-style figures
    rng = np.random.default_rng(0)
    fonts, drops = _figure_styles("V149385", font, None, 64, rng, 0.0)
    assert all(f is font for f in fonts) and not any(drops)
    assert rng.random() == np.random.default_rng(0).random()  # off: no draw from the stream
