"""Hugging Face transformers with attn_implementation="pykernels" and the RoPE swap.

Tiny models with random weights, built in code from configs (no downloads):
Llama (GQA), Mistral (sliding window on every layer), Qwen2 (full and
sliding layers), Llama with yarn and with llama3 rope scaling, gpt-oss
(learned sinks, alternating sliding/full layers, yarn rope), and for logits
and RoPE only Gemma3 (rope parameters per layer type, its own softmax scale). Each model is
built once per attention implementation with the same weights, and each
gets its own config: transformers writes the implementation into the config.

The weights use ``initializer_range=0.2`` (at hidden size 64; scaled by
``sqrt(64 / hidden)`` for the head dim 64 the GPU kernels take) so that
attention is sharp and matters to the logits; with the default 0.02 the
residual stream hides attention almost entirely. A few controls check that
the comparisons would notice a dropped causal mask, window or sink.

On CPU in float32 (CI): logits against "eager" and "sdpa", gradients of one
training step, greedy generation of 32 tokens with a KV cache, prefill in
chunks (Sq < Sk with Sq > 1), and the padding fallback. The model-level
tests use a strict registration, so a call that leaves the kernel fails them.
On the GPU in bf16: the same, with tolerances set by PyTorch's own bf16
error against a float32 run of the same model.
"""
import copy
import subprocess
import sys
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

import pykernels.integrations.transformers as pk_hf  # noqa: E402
from transformers import (  # noqa: E402
    DynamicCache,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GptOssConfig,
    GptOssForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers import masking_utils  # noqa: E402

STRICT = "pykernels_strict"
VOCAB = 128
WINDOW = 8
PROMPT = 20  # longer than WINDOW, so the window binds in prefill and in decoding
NEW_TOKENS = 32

pk_hf.register()
pk_hf.register(STRICT, strict=True)

GPU_HEAD_DIM = 64  # the CUDA kernels take head dims 32, 64, 96, 128, 256; CPU tests use 16


def _common(head_dim: int) -> dict:
    hidden = 4 * head_dim
    # Keeps q.k / sqrt(d) about the same size at every width (see the module docstring).
    init = 0.2 * (64 / hidden) ** 0.5
    return dict(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=head_dim, vocab_size=VOCAB, max_position_embeddings=256,
        initializer_range=init, pad_token_id=0,
    )


_YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32}
_LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
           "high_freq_factor": 4.0, "original_max_position_embeddings": 32}


def _ropes(head_dim: int) -> dict:
    """Each rope type with a trained length of 32 (or an original one below it).

    The 48-token inputs below run past it: dynamic rescales, longrope switches
    to its long factors.
    """
    half = head_dim // 2
    return {
        "default": {"rope_type": "default", "rope_theta": 10000.0},
        "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
        "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
        "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 8},
        "longrope": {"rope_type": "longrope", "rope_theta": 10000.0, "factor": 2.0,
                     "original_max_position_embeddings": 16,
                     "short_factor": [1.0 + 0.8 * i / half for i in range(half)],
                     "long_factor": [1.0 + 4.0 * i / half for i in range(half)]},
        "llama3": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
    }


ROPES = list(_ropes(16))


def _config(family: str, head_dim: int = 16):
    common = _common(head_dim)
    if family.startswith("rope_"):
        return LlamaForCausalLM, LlamaConfig(**{**common, "max_position_embeddings": 32},
                                             rope_parameters=_ropes(head_dim)[family[5:]])
    if family == "llama":
        return LlamaForCausalLM, LlamaConfig(**common)
    if family == "mistral":
        return MistralForCausalLM, MistralConfig(**common, sliding_window=WINDOW)
    if family == "qwen2":
        return Qwen2ForCausalLM, Qwen2Config(**common, use_sliding_window=True, sliding_window=WINDOW,
                                             max_window_layers=1)
    if family == "llama_yarn":
        return LlamaForCausalLM, LlamaConfig(**common, rope_parameters=dict(_YARN))
    if family == "llama3":
        return LlamaForCausalLM, LlamaConfig(**common, rope_parameters=dict(_LLAMA3))
    if family == "gpt_oss":
        # Every token uses both experts: a top-k choice among more would flip
        # under bf16 noise and swamp the attention error this file measures.
        return GptOssForCausalLM, GptOssConfig(
            **{**common, "intermediate_size": common["hidden_size"]}, num_local_experts=2, num_experts_per_tok=2,
            sliding_window=WINDOW, rope_parameters=dict(_YARN, beta_fast=32.0, beta_slow=1.0, truncate=False),
        )
    if family == "gemma3":
        # Rope parameters per layer type, and a softmax scale from query_pre_attn_scalar.
        return Gemma3ForCausalLM, Gemma3TextConfig(
            **common, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"],
            query_pre_attn_scalar=2 * head_dim,
        )
    raise ValueError(family)


FAMILIES = ["llama", "mistral", "qwen2", "llama_yarn", "llama3", "gpt_oss"]
_cache = {}


def _has_sdpa(family: str) -> bool:
    return _config(family)[0]._supports_sdpa


def build(family: str, impl: str, dtype=torch.float32, device="cpu"):
    """The family's tiny model with ``impl`` attention; the same weights for every impl."""
    cls, cfg = _config(family, GPU_HEAD_DIM if torch.device(device).type == "cuda" else 16)
    key = (family, dtype, device)
    if key not in _cache:
        torch.manual_seed(1)
        ref = cls._from_config(copy.deepcopy(cfg), attn_implementation="eager")
        _cache[key] = {k: v.to(device=device, dtype=dtype) for k, v in ref.state_dict().items()}
    model = cls._from_config(copy.deepcopy(cfg), attn_implementation=impl)
    model.load_state_dict(_cache[key])
    return model.to(device=device, dtype=dtype).eval()


def impls(family: str):
    return ["eager", "sdpa"] if _has_sdpa(family) else ["eager"]


def tokens(batch=2, length=37, generator_seed=0, device="cpu"):
    g = torch.Generator().manual_seed(generator_seed)
    return torch.randint(1, VOCAB, (batch, length), generator=g).to(device)


def max_err(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


# --------------------------------------------------------------------- packaging
def test_pykernels_imports_without_transformers():
    """import pykernels never loads transformers; the integration says what it needs when it is missing."""
    code = (
        "import sys\n"
        "import pykernels, pykernels.integrations\n"
        "assert 'transformers' not in sys.modules, 'import pykernels loaded transformers'\n"
        "sys.modules['transformers'] = None\n"
        "try:\n"
        "    import pykernels.integrations.transformers\n"
        "except ImportError as e:\n"
        "    assert 'needs the transformers package' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('expected ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_rejects_bad_names():
    for bad in ["", "org/repo", "paged|x", 3]:
        with pytest.raises(ValueError, match="name"):
            pk_hf.register(bad)


# ------------------------------------------------------------------------ logits
@pytest.mark.parametrize("family", FAMILIES + ["gemma3"])
def test_logits_match_eager_and_sdpa(family):
    ids = tokens()
    with torch.no_grad():
        out = build(family, STRICT)(ids).logits
        for impl in impls(family):
            ref = build(family, impl)(ids).logits
            assert max_err(out, ref) < 1e-4, f"{family}: pykernels vs {impl}"


def test_controls_would_catch_a_dropped_mask():
    """The tolerance above is far below what a missing causal mask, window or sink changes."""
    ids = tokens()
    with torch.no_grad():
        ref = build("llama", "eager")(ids).logits
        model = build("llama", STRICT)
        for layer in model.model.layers:
            layer.self_attn.is_causal = False
        assert max_err(model(ids).logits, ref) > 1e-2

        ref = build("mistral", "eager")(ids).logits
        model = build("mistral", STRICT)
        model.config.sliding_window = 10**6
        assert max_err(model(ids).logits, ref) > 1e-2

        ref = build("gpt_oss", "eager")(ids).logits
        model = build("gpt_oss", STRICT)
        for layer in model.model.layers:
            layer.self_attn.sinks.data.zero_()
        assert max_err(model(ids).logits, ref) > 1e-2


def test_scaling_argument_is_used():
    """A softmax scale other than 1/sqrt(head_dim) (as Gemma's query_pre_attn_scalar gives) reaches the kernel."""
    ids = tokens()
    models = {impl: build("llama", impl) for impl in ("eager", STRICT)}
    with torch.no_grad():
        default = models["eager"](ids).logits
        for model in models.values():
            for layer in model.model.layers:
                layer.self_attn.scaling = 0.61
        ref, got = (models[impl](ids).logits for impl in ("eager", STRICT))
    assert max_err(ref, default) > 1e-2
    assert max_err(got, ref) < 1e-4


def test_default_registration_serves_on_the_kernel(monkeypatch):
    """The documented two lines: register(), then attn_implementation="pykernels"."""
    calls = []
    kernel = pk_hf.flash_attn_func
    monkeypatch.setattr(pk_hf, "flash_attn_func", lambda *a, **k: calls.append(k) or kernel(*a, **k))
    with torch.no_grad():
        build("qwen2", "pykernels")(tokens())
    # One call per layer: layer 0 full attention, layer 1 a sliding window of WINDOW keys.
    assert [c["window_size"] for c in calls] == [(-1, -1), (WINDOW - 1, 0)]
    assert all(c["causal"] for c in calls)

    calls.clear()
    model = build("qwen2", "eager")
    model.set_attn_implementation("pykernels")
    with torch.no_grad():
        model(tokens())
    assert len(calls) == 2


# --------------------------------------------------------------------- gradients
def _grads(model, ids):
    model.train()
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILIES)
def test_training_step_gradients_match_eager(family):
    ids = tokens(length=29)
    got = _grads(build(family, STRICT), ids)
    ref = _grads(build(family, "eager"), ids)
    assert got.keys() == ref.keys()
    if family == "gpt_oss":
        assert all(f"layers.{i}.self_attn.sinks" in " ".join(got) for i in range(2))
    for name in ref:
        scale = float(ref[name].abs().max()) + 1e-6
        assert max_err(got[name], ref[name]) <= 1e-4 * scale, f"{family}: d{name}"


# -------------------------------------------------------------------- generation
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_matches_eager(family):
    ids = tokens(length=PROMPT)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
              do_sample=False)
    with torch.no_grad():
        got = build(family, STRICT).generate(ids, **kw)
        ref = build(family, "eager").generate(ids, **kw)
    assert got.shape[1] == PROMPT + NEW_TOKENS
    assert torch.equal(got, ref)


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt_oss"])
def test_prefill_in_chunks_aligns_rows_bottom_right(family):
    """A second chunk of 11 queries over 11 + 17 keys: Sq < Sk with Sq > 1."""
    ids = tokens(length=28)
    with torch.no_grad():
        ref = build(family, "eager")(ids).logits[:, 17:]
        model = build(family, STRICT)
        cache = DynamicCache(config=model.config)
        model(ids[:, :17], past_key_values=cache, use_cache=True)
        got = model(ids[:, 17:], past_key_values=cache, use_cache=True).logits
    assert max_err(got, ref) < 1e-4


# ------------------------------------------------------------------ the fallback
def _left_padded():
    ids = tokens(length=PROMPT)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt_oss"])
def test_padding_falls_back_with_one_warning(family, monkeypatch):
    monkeypatch.setattr(pk_hf, "_warned", set())
    ids, mask = _left_padded()
    kw = dict(attention_mask=mask, max_new_tokens=8, do_sample=False)
    with torch.no_grad():
        ref_logits = build(family, "eager")(ids, attention_mask=mask).logits
        ref = build(family, "eager").generate(ids, **kw)
        model = build(family, "pykernels")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logits = model(ids, attention_mask=mask).logits
            got = model.generate(ids, **kw)
    fallbacks = [w for w in caught if issubclass(w.category, pk_hf.PykernelsFallbackWarning)]
    assert len(fallbacks) == 1 and "dense attention mask" in str(fallbacks[0].message)
    keep = mask.bool()
    assert max_err(logits[keep], ref_logits[keep]) < 1e-4
    assert torch.equal(got, ref)


def test_padding_raises_when_strict():
    ids, mask = _left_padded()
    with torch.no_grad(), pytest.raises(ValueError, match="padding in attention_mask"):
        build("llama", STRICT)(ids, attention_mask=mask)


def test_packed_sequences_fall_back_and_match_eager(monkeypatch):
    """position_ids that restart mark packed sequences: a block-diagonal mask the kernel cannot express."""
    monkeypatch.setattr(pk_hf, "_warned", set())
    ids = tokens(batch=1, length=24)
    pos = torch.cat([torch.arange(10), torch.arange(14)])[None]
    with torch.no_grad():
        ref = build("llama", "eager")(ids, position_ids=pos, use_cache=False).logits
        with pytest.warns(pk_hf.PykernelsFallbackWarning):
            got = build("llama", "pykernels")(ids, position_ids=pos, use_cache=False).logits
    assert max_err(got, ref) < 1e-4


def test_dropout_falls_back_and_softcap_raises_when_strict():
    q = torch.randn(1, 4, 5, 8)
    kv = torch.randn(1, 2, 5, 8)
    module = torch.nn.Module()
    with pytest.raises(ValueError, match="attention dropout"):
        pk_hf.attention_forward(module, q, kv, kv, None, dropout=0.1, strict=True)
    with pytest.raises(ValueError, match="soft-capping"):
        pk_hf.attention_forward(module, q, kv, kv, None, softcap=30.0, strict=True)


def test_fallback_math_matches_the_kernel():
    """The PyTorch fallback (sinks, window, GQA, bottom-right) computes what the kernel computes."""
    q = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    k, v = torch.randn(2, 2, 11, 8, dtype=torch.float64), torch.randn(2, 2, 11, 8, dtype=torch.float64)
    sinks = torch.randn(4, dtype=torch.float64)
    module = torch.nn.Module()
    for s_aux in (None, sinks):
        want, _ = pk_hf.attention_forward(module, q, k, v, None, scaling=0.3, sliding_window=4, s_aux=s_aux)
        got = pk_hf._torch_attention(q, k, v, None, 0.0, 0.3, None, s_aux, True, (3, 0))
        assert max_err(got, want) < 1e-12


def test_value_head_dim_other_than_the_key_head_dim():
    """MLA-style heads (DeepSeek): values narrower or wider than queries and keys."""
    module = torch.nn.Module()
    for d_qk, d_v in ((12, 8), (8, 12)):
        q = torch.randn(2, 4, 6, d_qk, dtype=torch.float64)
        k, v = torch.randn(2, 2, 9, d_qk, dtype=torch.float64), torch.randn(2, 2, 9, d_v, dtype=torch.float64)
        got, _ = pk_hf.attention_forward(module, q, k, v, None, sliding_window=5, strict=True)
        want = pk_hf._torch_attention(q, k, v, None, 0.0, None, None, None, True, (4, 0))
        assert got.shape == (2, 6, 4, d_v) and max_err(got, want) < 1e-12


# -------------------------------------------------------------- the mask function
def _mask(**kw):
    args = dict(batch_size=2, q_length=5, kv_length=5, q_offset=0, kv_offset=0,
                mask_function=masking_utils.causal_mask_function, attention_mask=None)
    args.update(kw)
    return pk_hf.create_mask(**args), args


def test_mask_function_leaves_causal_and_windows_to_the_kernel():
    assert _mask()[0] is None
    assert _mask(attention_mask=torch.ones(2, 5, dtype=torch.bool))[0] is None
    # Decoding: one query at position 12 over 13 keys.
    assert _mask(q_length=1, kv_length=13, q_offset=12)[0] is None
    # A sliding-window cache keeps WINDOW - 1 old keys; the window matches the config's.
    cfg = MistralConfig(sliding_window=WINDOW)
    sliding = masking_utils.sliding_window_causal_mask_function(WINDOW)
    assert _mask(q_length=1, kv_length=WINDOW, q_offset=20, kv_offset=13, mask_function=sliding,
                 local_size=WINDOW, config=cfg)[0] is None


@pytest.mark.parametrize("case", ["padding", "static_cache", "chunked", "custom", "overlay"])
def test_mask_function_builds_sdpa_mask_when_the_kernel_cannot(case):
    pad = torch.ones(2, 5, dtype=torch.bool)
    pad[0, 0] = False
    chunked = masking_utils.chunked_causal_mask_function(4, torch.zeros(2, dtype=torch.long))
    kw = {
        "padding": dict(attention_mask=pad),
        "static_cache": dict(q_length=1, kv_length=16, q_offset=4),
        "chunked": dict(mask_function=chunked, local_size=4, config=LlamaConfig(attention_chunk_size=4)),
        "custom": dict(mask_function=masking_utils.bidirectional_mask_function),
        "overlay": dict(allow_is_causal_skip=False),
    }[case]
    got, args = _mask(**kw)
    args.update(allow_is_causal_skip=False)
    args.pop("config", None)
    want = masking_utils.sdpa_mask(**args)
    assert got is not None and got.dtype == torch.bool and torch.equal(got, want)
    with pytest.raises(ValueError, match="pykernels attention: cannot serve"):
        pk_hf.create_mask(**{**args, "allow_is_causal_skip": kw.get("allow_is_causal_skip", True)}, strict=True)


# -------------------------------------------------------------------------- RoPE
@pytest.mark.parametrize("family", [f"rope_{kind}" for kind in ROPES] + ["gpt_oss", "gemma3"])
def test_patch_rope_gives_the_models_logits(family):
    """pykernels' rope (and attention) against the model's own rotary embedding on eager attention."""
    ids = tokens(length=48)
    with torch.no_grad():
        ref = build(family, "eager")(ids).logits
        model = pk_hf.patch_rope(build(family, STRICT))
        assert isinstance(model.model.rotary_emb, pk_hf.PykernelsRotaryEmbedding)
        assert model.model.rotary_emb.half == (family == "gpt_oss")  # gpt-oss rotates with half tables
        got = model(ids).logits
    assert max_err(got, ref) < 1e-4


@pytest.mark.parametrize("family", ["rope_dynamic", "rope_longrope"])
def test_patch_rope_generation_across_the_length_switch(family):
    """A 20-token prompt and 32 new tokens cross the trained length of 32 while decoding."""
    ids = tokens(length=PROMPT)
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
              do_sample=False)
    with torch.no_grad():
        ref = build(family, "eager").generate(ids, **kw)
        got = pk_hf.patch_rope(build(family, STRICT)).generate(ids, **kw)
    assert torch.equal(got, ref)


def test_patch_rope_refuses_a_module_it_does_not_reproduce():
    model = build("rope_yarn", "eager")
    model.config.rope_parameters["factor"] = 2.0  # the module was built with 4.0
    with pytest.raises(ValueError, match="patch_rope: pykernels' cos differs"):
        pk_hf.patch_rope(model)
    assert not isinstance(model.model.rotary_emb, pk_hf.PykernelsRotaryEmbedding)


def test_patch_rope_tables_stay_float32_under_model_to():
    model = pk_hf.patch_rope(build("rope_yarn", "eager")).to(torch.bfloat16)
    ids = tokens(length=12)
    cos, sin = model.model.rotary_emb(torch.zeros(1, dtype=torch.bfloat16), torch.arange(12)[None])
    assert cos.dtype == torch.bfloat16 and model.model.rotary_emb.rope().inv_freq.dtype == torch.float32
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


# ------------------------------------------------------------------------- GPU
def _bf16_runs(family, fn):
    """fn(model) for a float32 run and bf16 runs of pykernels and PyTorch's implementations, on the GPU."""
    ref = fn(build(family, "eager", torch.float32, "cuda"))
    got = fn(build(family, STRICT, torch.bfloat16, "cuda"))
    base = {impl: fn(build(family, impl, torch.bfloat16, "cuda")) for impl in impls(family)}
    return ref, got, base


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_gpu_bf16_logits_within_pytorch_error(family):
    ids = tokens(device="cuda")
    with torch.no_grad():
        ref, got, base = _bf16_runs(family, lambda m: m(ids).logits.float())
    err = max_err(got, ref)
    worst = max(max_err(b, ref) for b in base.values())
    assert err <= 2 * worst + 1e-3, f"{family}: pykernels bf16 error {err:.3e} vs PyTorch bf16 {worst:.3e}"


@pytest.mark.gpu
@pytest.mark.parametrize("kind", list(ROPES))
def test_gpu_bf16_patched_rope_within_pytorch_error(kind):
    family = f"rope_{kind}"
    ids = tokens(length=48, device="cuda")
    with torch.no_grad():
        ref = build(family, "eager", torch.float32, "cuda")(ids).logits.float()
        got = pk_hf.patch_rope(build(family, STRICT, torch.bfloat16, "cuda"))(ids).logits.float()
        base = [build(family, impl, torch.bfloat16, "cuda")(ids).logits.float() for impl in impls(family)]
    err, worst = max_err(got, ref), max(max_err(b, ref) for b in base)
    assert err <= 2 * worst + 1e-3, f"{kind}: pykernels bf16 error {err:.3e} vs PyTorch bf16 {worst:.3e}"


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_gpu_bf16_gradients_within_pytorch_error(family):
    ids = tokens(length=29, device="cuda")

    def flat_grads(model):
        g = _grads(model, ids)
        return torch.cat([g[n].float().flatten() for n in sorted(g)])

    ref, got, base = _bf16_runs(family, flat_grads)
    rel = lambda x: float((x - ref).norm() / ref.norm())  # noqa: E731
    worst = max(rel(b) for b in base.values())
    assert rel(got) <= 2 * worst + 1e-3, f"{family}: gradient error {rel(got):.3e} vs PyTorch bf16 {worst:.3e}"


@pytest.mark.gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_gpu_bf16_greedy_generation_matches_eager(family):
    """The same tokens as eager in bf16, or decoding no noisier than PyTorch's.

    Random tiny models have near-tied logits, and bf16 eager itself leaves the
    float32 greedy path within a few tokens, so token identity is not a bf16
    property. Where pykernels' tokens differ from eager's, the logits it
    decoded with (KV cache and all) must be within twice PyTorch's own bf16
    decoding error of the float32 model's logits on the same tokens.
    """
    ids = tokens(length=PROMPT, device="cuda")
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
              do_sample=False, output_logits=True, return_dict_in_generate=True)
    fp32 = build(family, "eager", torch.float32, "cuda")

    def decode(impl):
        """The greedy tokens, and the max error of the logits that chose them against float32 teacher forcing."""
        out = build(family, impl, torch.bfloat16, "cuda").generate(ids, **kw)
        ref = fp32(out.sequences).logits[:, PROMPT - 1:-1]
        return out.sequences, max_err(torch.stack(out.logits, dim=1).float(), ref)

    with torch.no_grad():
        got, err = decode(STRICT)
        ref, _ = decode("eager")
        if torch.equal(got, ref):
            return
        noise = max(decode(impl)[1] for impl in impls(family))
    assert err <= 2 * noise + 1e-2, f"{family}: decoding error {err:.3e} vs PyTorch bf16 {noise:.3e}"
