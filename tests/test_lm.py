"""The generated corpus and the small language model of the monitor's chapter."""
import torch

from utils.training.lm import CharData, TinyGPT, grammar_corpus, lm_loss


def test_corpus_is_deterministic_and_batches_reproducible():
    text = grammar_corpus(5_000, seed=1)
    assert len(text) == 5_000 and text == grammar_corpus(5_000, seed=1)
    assert text != grammar_corpus(5_000, seed=2)
    data = CharData(text, context=16)
    x, y = data.batch(4, step=3)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x, data.batch(4, step=3)[0]) and not torch.equal(x, data.batch(4, step=4)[0])


def test_model_size_causality_and_loss():
    data = CharData(grammar_corpus(5_000), context=64)
    model = TinyGPT(data.vocab_size, context=64)
    n = sum(p.numel() for p in model.parameters())
    assert 0.7e6 < n < 1.1e6
    x, y = data.batch(2, step=0)
    with torch.no_grad():
        full = model(x)
        changed = x.clone()
        changed[:, 40:] = (changed[:, 40:] + 1) % data.vocab_size
        assert torch.allclose(model(changed)[:, :40], full[:, :40], atol=1e-6)
        loss = lm_loss(model, (x, y))
    assert abs(float(loss) - torch.log(torch.tensor(float(data.vocab_size)))) < 0.5


def test_repeated_corpus_cycles_a_few_simple_sentences():
    from utils.training.lm import repeated_corpus

    text = repeated_corpus(n_sentences=3, n_chars=2_000, seed=0)
    assert len(text) == 2_000 and text == repeated_corpus(3, 2_000, seed=0)
    sentences = [s.strip() for s in text.split(" . ")[:-1]]
    assert len(set(sentences)) == 3 and sentences[:3] == sentences[3:6]
    assert not any(c in s.split() for s in sentences for c in ("and", "but", "while", "because"))
