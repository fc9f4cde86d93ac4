"""ConanForCausalLM generation and KV cache: cached decoding against a float64 full-sequence
reference, Llama's greedy tokens, and the errors for what a cache cannot do."""

import pytest
import torch
from transformers import DynamicCache, LlamaForCausalLM, StaticCache

from conan_core.errors import ConanError
from conan_core.model import ConanForCausalLM
from conan_core.model.llama import to_llama_config
from tests.model.model_reference import build_mask, tiny_config


def make_lm(seed=0, **overrides):
    torch.manual_seed(seed)
    model = ConanForCausalLM(tiny_config(rope_theta=1000.0, rms_norm_eps=1e-5, **overrides)).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


@pytest.mark.parametrize("backend", ["sdpa", "eager", "flex"])
def test_cached_decoding_matches_float64_full_forward(backend):
    """Feeding a left-padded prompt, then one token at a time through the cache, gives at every
    step the logits of a float64 model run on the whole sequence so far."""
    model = make_lm(attention_backend=backend)
    reference = make_lm(attention_backend="eager").double()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 97, (3, 10), generator=g)
    attn = torch.ones_like(ids)
    attn[1, :3] = 0  # left padding
    attn[2, :1] = 0
    prompt = 6
    with torch.no_grad():
        out = model(ids[:, :prompt], attn[:, :prompt], use_cache=True)
        steps = [out.logits[:, -1]]
        cache = out.cache
        for t in range(prompt, ids.shape[1]):
            out = model(ids[:, t:t + 1], attn[:, :t + 1], cache=cache, use_cache=True)
            steps.append(out.logits[:, -1])
        assert cache.get_seq_length() == ids.shape[1]
        for n, got in zip(range(prompt, ids.shape[1] + 1), steps):
            want = reference(ids[:, :n], attn[:, :n]).logits[:, -1]
            assert (got.double() - want).abs().max() < 1e-5, n


def test_greedy_tokens_equal_llama_with_copied_weights():
    model = make_lm()
    llama = LlamaForCausalLM(to_llama_config(model.config, attn_implementation="eager")).eval()
    llama.load_state_dict(model.state_dict())
    llama.generation_config.eos_token_id = None
    llama.generation_config.pad_token_id = 0
    g = torch.Generator().manual_seed(4)
    prompt = torch.randint(3, 97, (3, 6), generator=g)
    attn = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        ours = model.generate(prompt, attention_mask=attn, max_new_tokens=12, do_sample=False)
        theirs = llama.generate(prompt, attention_mask=attn, max_new_tokens=12, do_sample=False)
    assert torch.equal(ours, theirs)


def test_use_cache_true_returns_a_dynamic_cache_and_false_none():
    model = make_lm()
    ids = torch.randint(3, 97, (2, 5))
    with torch.no_grad():
        with_cache = model(ids, use_cache=True)
        without = model(ids)
        hidden = model.model(ids, use_cache=True)
    assert isinstance(with_cache.cache, DynamicCache) and with_cache.cache.get_seq_length() == 5
    assert isinstance(hidden.cache, DynamicCache)
    assert without.cache is None  # config.use_cache is False: training never builds a cache
    assert model.config.use_cache is False and model.generation_config.use_cache is True
    assert torch.equal(with_cache.logits, without.logits)


def test_logits_to_keep():
    model = make_lm()
    ids = torch.randint(3, 97, (2, 7))
    with torch.no_grad():
        full = model(ids).logits
        last = model(ids, logits_to_keep=1).logits
        picked = model(ids, logits_to_keep=torch.tensor([0, 3])).logits
    # the head's matmul on fewer rows may round differently: equal up to float32 rounding
    assert torch.allclose(last, full[:, -1:], atol=1e-6) and torch.allclose(picked, full[:, [0, 3]], atol=1e-6)
    assert last.shape == (2, 1, 97) and picked.shape == (2, 2, 97)
    with pytest.raises(ConanError, match="logits_to_keep"):
        model(ids, labels=ids, logits_to_keep=1)


def test_an_embedder_default_mask_generates_with_an_explicit_causal_mask():
    """An exported embedder defaults to the bidirectional mask: a cache refuses it, and
    generate(mask=causal) samples the causal LM."""
    model = make_lm(default_mask="bidirectional")
    causal_twin = make_lm()
    ids = torch.randint(3, 97, (2, 5))
    with pytest.raises(ConanError, match="causal mask"):
        model.generate(ids, max_new_tokens=3, do_sample=False)
    with torch.no_grad():
        tokens = model.generate(ids, max_new_tokens=4, do_sample=False, mask=build_mask("causal"))
        expected = causal_twin.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(tokens, expected)


def test_soft_mask_cache_only_at_alpha_zero():
    model = make_lm()
    soft = build_mask("soft")
    ids = torch.randint(3, 97, (1, 4))
    with torch.no_grad():
        assert model(ids, mask=soft, alpha=0.0, use_cache=True).cache.get_seq_length() == 4
    with pytest.raises(ConanError, match="causal mask"):
        model(ids, mask=soft, alpha=0.5, use_cache=True)


def test_caches_the_model_cannot_use_are_refused():
    model = make_lm()
    ids = torch.randint(3, 97, (1, 4))
    static = StaticCache(config=model.config, max_cache_len=16)
    with pytest.raises(ConanError, match="fixed-size"):
        model(ids, cache=static)
    with pytest.raises(ConanError, match="Cache"):
        model(ids, cache=((torch.zeros(1), torch.zeros(1)),))
    with pytest.raises(ConanError, match="once"):
        model(ids, cache=DynamicCache(), past_key_values=DynamicCache())


def test_gradient_checkpointing_in_training_drops_the_cache():
    model = make_lm().train()
    model.gradient_checkpointing_enable()
    ids = torch.randint(3, 97, (2, 5))
    out = model(ids, labels=ids, use_cache=True)
    assert out.cache is None
    out.loss.backward()
