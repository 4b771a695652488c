"""A session's mean and spread of each bin swapped for the training ones (agent.core.session_mean)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.autoencoder import load_autoencoder, save_autoencoder, train_autoencoder
from agent.core.config import AutoencoderSettings, SenseSettings
from agent.core.session_mean import SessionMean, heard_as_session

SHAPE = (8, 6)


def words(n: int, seed: int = 0) -> np.ndarray:
    """`n` varied 'spectrograms' in [0.2, 0.7]: room to colour them without clipping."""
    return np.random.default_rng(seed).uniform(0.2, 0.7, (n, *SHAPE)).astype(np.float32)


def coloured(x: np.ndarray) -> np.ndarray:
    """The same words in another voice: more energy in the low rows, less in the high ones."""
    tint = np.linspace(0.2, -0.15, SHAPE[0], dtype=np.float32)[:, None]
    return x + tint


def reference_of(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), x.std(0)


def test_a_voice_s_colouring_is_taken_off_once_the_session_has_heard_it():
    reference = reference_of(words(400, seed=1))
    said = words(300)
    plain = SessionMean(*reference, prior=10, window=100)(said)
    heard = SessionMean(*reference, prior=10, window=100)(coloured(said))
    gap_before = np.abs(coloured(said) - said)[200:].mean()
    gap_after = np.abs(heard - plain)[200:].mean()
    assert gap_before > 0.05
    assert gap_after < 0.1 * gap_before, (gap_before, gap_after)  # the two voices now reach the encoder alike


def test_a_hiss_that_lifts_the_floor_and_flattens_the_contrast_is_undone():
    """Under a steady noise every bin sits higher and varies less: the spread matters, not only the mean."""
    reference = reference_of(words(400, seed=1))
    said = words(300)
    hissed = 0.5 + 0.4 * (said - 0.45)  # lifted towards 0.5, half the contrast
    plain = SessionMean(*reference, prior=10, window=100)(said)
    heard = SessionMean(*reference, prior=10, window=100)(hissed)
    gap_before, gap_after = np.abs(hissed - said)[200:].mean(), np.abs(heard - plain)[200:].mean()
    assert gap_after < 0.15 * gap_before, (gap_before, gap_after)
    mean_only = np.clip(hissed - hissed[:200].mean(0) + reference[0], 0, 1)  # the mean alone leaves it flat
    assert np.abs(mean_only - plain)[200:].mean() > 3 * gap_after


def test_the_first_word_is_taken_as_it_is_and_the_average_starts_at_the_reference():
    reference, spread = reference_of(words(50, seed=1))
    x = words(1)
    session = SessionMean(reference, spread, prior=10, window=100)
    np.testing.assert_allclose(session(x)[0], np.clip(x[0], 0, 1), atol=1e-6)
    np.testing.assert_allclose(session.mean, reference + (x[0] - reference) / 11, atol=1e-6)
    session.reset()
    assert session.heard == 0 and np.array_equal(session.mean, reference)


def test_a_stimulus_with_nan_passes_uncounted_and_leaves_the_average_clean():
    session = SessionMean(np.full(SHAPE, 0.5), np.full(SHAPE, 0.1), prior=10, window=100)
    session(words(5))
    before = session.mean.copy()
    bad = words(1)
    bad[0, 2, 3] = np.nan
    out = session(bad)
    assert np.isnan(out[0, 2, 3]) and session.heard == 5 and np.array_equal(session.mean, before)


def test_wrong_shapes_and_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        SessionMean(np.zeros(SHAPE), np.ones(SHAPE), 10, 100)(np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="prior"):
        SessionMean(np.zeros(SHAPE), np.ones(SHAPE), 0, 100)
    with pytest.raises(ValueError, match="spread"):
        SessionMean(np.zeros(SHAPE), -np.ones(SHAPE), 10, 100)


def test_a_test_set_is_heard_in_a_seeded_order_and_given_back_in_its_own():
    x = words(60)
    model, _ = train_autoencoder(words(200, seed=1), AutoencoderSettings(arch="identity"), seed=0, progress=False)
    sense = SenseSettings(session_window=20)
    a, b = heard_as_session(x, model, sense, seed=3), heard_as_session(x, model, sense, seed=3)
    assert np.array_equal(a, b)
    order = np.random.default_rng(3).permutation(len(x))  # the same session, by hand
    by_hand = np.empty_like(x)
    by_hand[order] = SessionMean(model.input_mean.numpy(), model.input_std.numpy(), sense.session_prior, 20)(x[order])
    assert np.array_equal(a, by_hand)
    assert not np.array_equal(a, x)
    assert np.array_equal(heard_as_session(x, model, SenseSettings(), seed=3), x)  # a sense that keeps none


def test_a_session_that_met_the_voice_before_takes_off_its_colouring_from_the_first_word():
    """`before`: the live agent heard this voice earlier in the session (the words of a show-and-tell)."""
    model, _ = train_autoencoder(words(400, seed=1), AutoencoderSettings(arch="identity"), seed=0, progress=False)
    sense = SenseSettings(session_window=100)
    said, earlier = words(10, seed=5), coloured(words(60, seed=6))
    cold = heard_as_session(coloured(said), model, sense, seed=0)
    warm = heard_as_session(coloured(said), model, sense, seed=0, before=earlier)
    assert np.abs(warm - said).mean() < 0.5 * np.abs(cold - said).mean()


def test_the_encoder_keeps_the_average_of_what_it_was_trained_on(tmp_path):
    x = words(100)
    model, _ = train_autoencoder(x, AutoencoderSettings(arch="linear", code_dim=4), seed=0, progress=False)
    save_autoencoder(model, tmp_path / "a.pt")
    again = load_autoencoder(tmp_path / "a.pt")
    np.testing.assert_allclose(again.input_mean.numpy(), x.mean(0), atol=1e-6)
    np.testing.assert_allclose(again.input_std.numpy(), x.std(0), atol=1e-6)


def test_a_sleep_hears_a_session_s_first_words_as_the_settled_session_does():
    """`settled`: the first words of a new voice, heard before the session knew it, are taught where
    the session puts that voice once it has heard a few dozen words; heard in order they are not."""
    reference = reference_of(words(400, seed=1))
    said = words(40, seed=2)
    in_order = SessionMean(*reference, prior=10, window=100)(coloured(said))
    settled = SessionMean(*reference, prior=10, window=100).settled(coloured(said))
    first = slice(0, 10)
    assert np.abs(settled - said)[first].mean() < 0.5 * np.abs(in_order - said)[first].mean()
    # the last word is heard by the figures of all 40 in both ways but its own
    final = SessionMean(*reference, prior=10, window=100)
    final.count(coloured(said))
    np.testing.assert_allclose(settled[-1], final.rescale(coloured(said)[-1:])[0], atol=1e-6)


def test_settled_looks_only_window_words_ahead_and_counts_what_it_heard():
    """A long buffer holds more than one voice: each word is rescaled by the figures `delay` words
    after it, so an old voice's words are not heard with a newer voice's colouring."""
    reference = reference_of(words(400, seed=1))
    first_voice, second_voice = words(200, seed=3), coloured(words(200, seed=4))
    session = SessionMean(*reference, prior=10, window=50)
    out = session.settled(np.concatenate([first_voice, second_voice]), delay=20)
    assert session.heard == 400
    alone = SessionMean(*reference, prior=10, window=50).settled(first_voice, delay=20)
    np.testing.assert_array_equal(out[:180], alone[:180])  # words 20 or more before the change: not a bit moved
    second_alone = SessionMean(*reference, prior=10, window=50).settled(second_voice, delay=20)
    tint = np.abs(second_voice - words(200, seed=4)).mean()
    assert np.abs(out[250:] - second_alone[50:]).mean() < 0.1 * tint  # the second voice as its own session hears it


def test_rescale_counts_nothing():
    reference = reference_of(words(400, seed=1))
    session = SessionMean(*reference, prior=10, window=100)
    session(coloured(words(30)))
    mean, heard = session.mean.copy(), session.heard
    session.rescale(coloured(words(5, seed=9)))
    assert session.heard == heard and np.array_equal(session.mean, mean)
