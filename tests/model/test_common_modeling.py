"""transformers' common model checks (ModelTesterMixin and the Llama model tests), rewritten for
ConanModel / ConanForCausalLM with transformers' Llama of the same architecture as the control.

Each test runs for both families; one that Llama itself fails is marked there with the reason.
Output flags, attention implementations and training are in test_common_outputs.py; generation,
the KV cache and padding in test_common_generation.py.
"""

import copy
import inspect

import pytest
import torch

from tests.model.families import BATCH, FAMILIES, HIDDEN, SEQ, VOCAB, inputs

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' checkpointing rename


@pytest.fixture(params=list(FAMILIES))
def family(request):
    return FAMILIES[request.param]


def outputs_equal(a, b, atol=1e-5):
    return (a - b).abs().max().item() <= atol


def test_save_load(family, tmp_path):
    ids, attn = inputs()
    for kind in ("base", "lm"):
        model = family.model(kind)
        with torch.no_grad():
            before = model(ids, attention_mask=attn)[0]
        model.save_pretrained(tmp_path / kind)
        loaded = getattr(family, kind).from_pretrained(tmp_path / kind).eval()
        with torch.no_grad():
            after = loaded(ids, attention_mask=attn)[0]
        assert outputs_equal(before, after), kind
        assert (tmp_path / kind / "model.safetensors").exists()


def test_torch_save_load_state_dict(family, tmp_path):
    model = family.model("lm")
    torch.save(model.state_dict(), tmp_path / "state.pt")
    fresh = family.model("lm", seed=1)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt"))
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name


def test_initialization_with_zero_range(family):
    """With initializer_range ~ 0 every trainable tensor's mean is 0 (weights) or 1 (norm gains)."""
    model = family.model("lm", initializer_range=1e-10)
    for name, param in model.named_parameters():
        mean = round(param.detach().mean().item(), 9)
        assert mean in (0.0, 1.0), name


def test_determinism(family):
    model = family.model("lm")
    ids, attn = inputs()
    with torch.no_grad():
        first = model(ids, attention_mask=attn)[0]
        second = model(ids, attention_mask=attn)[0]
    assert torch.equal(first, second)


def test_forward_signature(family):
    for kind in ("base", "lm"):
        names = list(inspect.signature(getattr(family, kind).forward).parameters)
        assert names[1:3] == ["input_ids", "attention_mask"], names
        assert getattr(family, kind).main_input_name == "input_ids"


def test_model_get_set_embeddings(family):
    model = family.model("lm")
    assert isinstance(model.get_input_embeddings(), torch.nn.Embedding)
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)
    new = torch.nn.Embedding(VOCAB, HIDDEN)
    model.set_input_embeddings(new)
    assert model.get_input_embeddings() is new
    assert model.get_decoder() is model.model


@pytest.mark.parametrize("tied", [False, True])
def test_resize_token_embeddings(family, tied):
    model = family.model("lm", tie_word_embeddings=tied)
    ids, attn = inputs()
    before = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(VOCAB + 10)
    assert model.config.vocab_size == VOCAB + 10
    assert model.get_input_embeddings().weight.shape[0] == VOCAB + 10
    assert model.get_output_embeddings().weight.shape[0] == VOCAB + 10
    assert torch.equal(model.get_input_embeddings().weight[:VOCAB], before)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    with torch.no_grad():
        assert model(ids + 10, attention_mask=attn).logits.shape == (BATCH, SEQ, VOCAB + 10)
    model.resize_token_embeddings(VOCAB - 5)
    assert model.get_output_embeddings().weight.shape[0] == VOCAB - 5


def test_tied_weights_survive_save_load(family, tmp_path):
    model = family.model("lm", tie_word_embeddings=True)
    model.save_pretrained(tmp_path)
    loaded = family.lm.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_inputs_embeds_matches_input_ids(family):
    ids, attn = inputs()
    for kind in ("base", "lm"):
        model = family.model(kind)
        embeds = model.get_input_embeddings()(ids)
        with torch.no_grad():
            a = model(input_ids=ids, attention_mask=attn)[0]
            b = model(inputs_embeds=embeds, attention_mask=attn)[0]
        assert torch.equal(a, b), kind


def test_batching_equivalence(family):
    """Each row of a right-padded batch equals that row run alone without padding."""
    ids, attn = inputs()
    model = family.model("base")
    with torch.no_grad():
        batched = model(ids, attention_mask=attn).last_hidden_state
        for row in range(BATCH):
            n = int(attn[row].sum())
            alone = model(ids[row:row + 1, :n]).last_hidden_state
            assert outputs_equal(batched[row, :n], alone[0]), row


def test_correct_missing_keys(family, tmp_path):
    """A base model's checkpoint loads into the causal LM with only the LM head missing."""
    base = family.model("base")
    base.save_pretrained(tmp_path)
    lm, info = family.lm.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info["missing_keys"]) == {"lm_head.weight"}
    assert not info["unexpected_keys"]
    assert torch.equal(lm.model.embed_tokens.weight, base.embed_tokens.weight)


def test_load_with_mismatched_shapes(family, tmp_path):
    family.model("lm").save_pretrained(tmp_path)
    loaded, info = family.lm.from_pretrained(tmp_path, vocab_size=VOCAB + 3, ignore_mismatched_sizes=True,
                                             output_loading_info=True)
    assert loaded.get_input_embeddings().weight.shape[0] == VOCAB + 3
    assert len(info["mismatched_keys"]) == 2  # embedding and LM head


def test_config_round_trips(family, tmp_path):
    config = family.config(tie_word_embeddings=True)
    again = type(config).from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    loaded = type(config).from_pretrained(tmp_path)
    assert loaded.to_json_string() == config.to_json_string()
    patched = type(config).from_pretrained(tmp_path, hidden_size=48)
    assert patched.hidden_size == 48


def test_model_is_small(family):
    assert family.model("lm").num_parameters() < 1_000_000


def test_deepcopy_keeps_outputs(family):
    model = family.model("lm")
    twin = copy.deepcopy(model)
    ids, attn = inputs()
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=attn).logits, twin(ids, attention_mask=attn).logits)
