"""RoPE on CPU: frequencies, HF parity, invariants, errors, the op and torch.compile.

The oracle for frequencies and for the rotation is Hugging Face transformers
(the pinned version in requirements): its rope init functions
(``ROPE_INIT_FUNCTIONS``, plus Llama's ``compute_default_rope_parameters``),
its rotary module (GPT-NeoX's, which honours ``partial_rotary_factor`` for
the default type too; dynamic and LongRoPE updates included) and
``apply_rotary_pos_emb``. Invariants and the float64 ``rotary_ref`` cover
what transformers has no counterpart for (interleaved, offsets, conjugate).
Everything here runs the torch backend; tests/test_rope_gpu.py runs the same
checks on every GPU backend.
"""
import itertools
import math

import pytest
import torch

import pykernels
from pykernels import rope
from pykernels.reference import rotary_ref

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding  # noqa: E402
from transformers.models.llama.modeling_llama import (  # noqa: E402
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()  # the grid trips transformers' advisory config warnings

DIMS = [32, 64, 96, 128, 256]
BASES = [10000.0, 500000.0, 1e6]
FACTORS = [1.0, 2.0, 4.0, 8.0, 32.0]
SEQ_LENS = [None, 1024, 4096, 9000, 65536]
MAX_POS = 4096
# transformers computes frequencies in float32, pykernels in float64 rounded
# once: they agree to a few float32 ulps.
FREQ_RTOL = 4e-6


def _hf_config(dim, base, params, max_pos=MAX_POS, **extra):
    p = dict(params, rope_theta=base)
    return LlamaConfig(hidden_size=4 * dim, num_attention_heads=4, head_dim=dim, max_position_embeddings=max_pos,
                       rope_parameters=p, **extra)


def _hf_inv_freq(config, seq_len=None):
    kind = config.rope_parameters["rope_type"]
    if kind == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[kind](config, None, seq_len=seq_len)


def _longrope_factors(dim):
    return [1.0 + 0.01 * i for i in range(dim // 2)], [1.0 + 0.37 * i for i in range(dim // 2)]


def _scalings(dim, factor):
    """Every rope type (keyed by a test id) with parameters that exercise its options."""
    short, long = _longrope_factors(dim)
    return {
        "default": {"rope_type": "default"},
        "linear": {"rope_type": "linear", "factor": factor},
        "dynamic": {"rope_type": "dynamic", "factor": factor},
        "yarn": {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": 2048},
        "yarn-options": {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": MAX_POS,
                         "beta_fast": 16, "beta_slow": 2, "mscale": 0.707, "mscale_all_dim": 1.0,
                         "truncate": False},
        "yarn-attention-factor": {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": 1024,
                                  "attention_factor": 0.8},
        "longrope": {"rope_type": "longrope", "short_factor": short, "long_factor": long,
                     "original_max_position_embeddings": 1024, "factor": factor},
        "longrope-no-factor": {"rope_type": "longrope", "short_factor": short, "long_factor": long,
                               "original_max_position_embeddings": 1024},
        "llama3": {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 2048},
    }


SCALING_IDS = list(_scalings(64, 2.0))


# --------------------------------------------------------------------------
# Frequencies
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCALING_IDS)
def test_inv_freq_matches_transformers(name):
    """The grid: every dim x base x factor (x seq_len where the type reads it)."""
    for dim, base, factor in itertools.product(DIMS, BASES, FACTORS):
        params = _scalings(dim, factor)[name]
        config = _hf_config(dim, base, params)
        seq_lens = SEQ_LENS if params["rope_type"] in ("dynamic", "longrope") else [None]
        for seq_len in seq_lens:
            ref, ref_af = _hf_inv_freq(config, seq_len)
            scaling = dict(params, max_position_embeddings=MAX_POS) if params["rope_type"] != "default" else None
            got, af = rope.inv_freq(dim, base, scaling, seq_len)
            where = f"{name} dim={dim} base={base:g} factor={factor:g} seq_len={seq_len}"
            assert got.dtype == torch.float32 and got.shape == (dim // 2,), where
            torch.testing.assert_close(got, ref, rtol=FREQ_RTOL, atol=0, msg=where)
            assert af == pytest.approx(ref_af, rel=1e-12), where


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("alpha", [1.5, 2.0, 8.0])
def test_static_ntk_is_dynamic_frozen_at_one_length(dim, alpha):
    """Static NTK-aware scaling by alpha = transformers' dynamic NTK at L = M (2 alpha - 1) / alpha
    (where its alpha = factor L / M - (factor - 1) equals the factor), and = a changed base."""
    got, af = rope.inv_freq(dim, 10000.0, {"rope_type": "ntk", "factor": alpha})
    config = _hf_config(dim, 10000.0, {"rope_type": "dynamic", "factor": alpha})
    ref, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, None, seq_len=MAX_POS * (2 * alpha - 1) / alpha)
    torch.testing.assert_close(got, ref, rtol=FREQ_RTOL, atol=0)
    new_base = 10000.0 * alpha ** (dim / (dim - 2))
    ref_base, _ = _hf_inv_freq(_hf_config(dim, new_base, {"rope_type": "default"}))
    torch.testing.assert_close(got, ref_base, rtol=FREQ_RTOL, atol=0)
    assert af == 1.0


def test_partial_rotary_frequencies_match_transformers():
    """transformers' rotary dim is int(head_dim * partial_rotary_factor)."""
    for name in ("linear", "yarn", "llama3", "dynamic"):
        params = _scalings(32, 4.0)[name]
        config = _hf_config(128, 10000.0, dict(params, partial_rotary_factor=0.25))
        ref, ref_af = _hf_inv_freq(config, 5000)
        emb = rope.from_hf_config(config)
        assert emb.dim == 32
        got, af = rope.inv_freq(emb.dim, emb.base, emb.scaling, 5000)
        torch.testing.assert_close(got, ref, rtol=FREQ_RTOL, atol=0, msg=name)
        assert af == pytest.approx(ref_af)


# --------------------------------------------------------------------------
# from_hf_config
# --------------------------------------------------------------------------

def test_from_hf_config_reads_rope_parameters():
    config = _hf_config(128, 500000.0, _scalings(128, 8.0)["llama3"])
    emb = rope.from_hf_config(config)
    assert (emb.dim, emb.base, emb.rope_type) == (128, 500000.0, "llama3")
    ref, _ = _hf_inv_freq(config)
    torch.testing.assert_close(emb.inv_freq, ref, rtol=FREQ_RTOL, atol=0)


def test_from_hf_config_reads_legacy_dict():
    """A raw config.json with rope_scaling + rope_theta, no head_dim."""
    d = {"hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 32768, "rope_theta": 1e6,
         "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}}
    emb = rope.from_hf_config(d)
    assert (emb.dim, emb.base, emb.rope_type) == (128, 1e6, "yarn")
    config = _hf_config(128, 1e6, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192},
                        max_pos=32768)
    ref, ref_af = _hf_inv_freq(config)
    torch.testing.assert_close(emb.inv_freq, ref, rtol=FREQ_RTOL, atol=0)
    assert emb.attention_factor == pytest.approx(ref_af)


def test_from_hf_config_partial_rotary_and_defaults():
    emb = rope.from_hf_config({"hidden_size": 2560, "num_attention_heads": 32, "partial_rotary_factor": 0.5})
    assert (emb.dim, emb.base, emb.rope_type) == (40, 10000.0, "default")
    emb = rope.from_hf_config({"head_dim": 64, "rope_parameters": {"rope_type": "default", "rope_theta": 5e4,
                                                                   "partial_rotary_factor": 0.25}})
    assert (emb.dim, emb.base) == (16, 5e4)


def test_from_hf_config_phi3_original_length_and_inferred_factor():
    """Phi-3 keeps original_max_position_embeddings at the top level and infers factor from it."""
    short, long = _longrope_factors(96)
    d = {"hidden_size": 3072, "num_attention_heads": 32, "max_position_embeddings": 131072,
         "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
         "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long}}
    emb = rope.from_hf_config(d)
    assert emb.dim == 96 and emb.rope_type == "longrope"
    assert emb.attention_factor == pytest.approx(math.sqrt(1 + math.log(32) / math.log(4096)))


def test_from_hf_config_per_layer_parameters():
    d = {"head_dim": 64, "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}
    assert rope.from_hf_config(d, layer_type="full_attention").rope_type == "linear"
    assert rope.from_hf_config(d, layer_type="sliding_attention").base == 1e4
    with pytest.raises(ValueError, match="layer_type"):
        rope.from_hf_config(d)


# --------------------------------------------------------------------------
# Against transformers' rotary module and apply_rotary_pos_emb
# --------------------------------------------------------------------------

# Small trained lengths, so that calls cross them at small positions where
# transformers' float32 angles (error ~ position * 2^-24) stay accurate.
HF_MAX_POS, HF_ORIGINAL = 64, 32


def _hf_module_config(name, dim=64, partial=1.0):
    params = dict(_scalings(dim, 4.0)[name])
    if "original_max_position_embeddings" in params:
        params["original_max_position_embeddings"] = HF_ORIGINAL
    if partial != 1.0:
        params["partial_rotary_factor"] = partial
    return _hf_config(int(dim / partial), 10000.0, params, max_pos=HF_MAX_POS)


def _hf_rotate(hf_rope, q, k, position_ids, rot):
    """transformers' path on (B, H, S, D): rotary module, then apply_rotary_pos_emb on the rotary part."""
    cos, sin = hf_rope(q, position_ids)
    qr, kr = apply_rotary_pos_emb(q[..., :rot], k[..., :rot], cos, sin)
    return torch.cat((qr, q[..., rot:]), -1), torch.cat((kr, k[..., rot:]), -1)


def _hf_tolerance(position_ids, x):
    # float32 angle rounding in transformers: |d theta| <= position * 2^-24.
    return 4 * (int(position_ids.max()) + 1) * 2.0 ** -24 * float(x.abs().max()) + 1e-5


@pytest.mark.parametrize("name", SCALING_IDS)
@pytest.mark.parametrize("partial", [1.0, 0.5])
def test_matches_transformers_across_calls(name, partial):
    """Calls whose lengths cross the trained length up and down: dynamic
    regrows and resets, LongRoPE switches factors, exactly as transformers."""
    config = _hf_module_config(name, partial=partial)
    hf_rope = GPTNeoXRotaryEmbedding(config)
    ours = rope.from_hf_config(config, layout="BHSD")
    rot = ours.dim
    b, hq, hk, d = 2, 4, 2, config.head_dim
    for length in (20, 40, 150, 100, 30, 200):
        s = 7
        start = torch.randint(0, length - s + 1, (b,))
        position_ids = start[:, None] + torch.arange(s)
        position_ids[0, -1] = length - 1  # the call's length is max position + 1
        q = torch.randn(b, hq, s, d)
        k = torch.randn(b, hk, s, d)
        q_hf, k_hf = _hf_rotate(hf_rope, q, k, position_ids, rot)
        q_pk, k_pk = ours(q, k, positions=position_ids)
        tol = _hf_tolerance(position_ids, q)
        torch.testing.assert_close(q_pk, q_hf, rtol=0, atol=tol, msg=f"{name} q at length {length}")
        torch.testing.assert_close(k_pk, k_hf, rtol=0, atol=tol, msg=f"{name} k at length {length}")


@pytest.mark.parametrize("name", SCALING_IDS)
def test_cos_sin_match_transformers(name):
    config = _hf_module_config(name)
    hf_rope = GPTNeoXRotaryEmbedding(config)
    ours = rope.from_hf_config(config)
    position_ids = torch.arange(100)[None]
    cos_hf, sin_hf = hf_rope(torch.zeros(1, dtype=torch.float32), position_ids)
    cos, sin = ours.cos_sin(position_ids[0])
    half = ours.dim // 2
    tol = _hf_tolerance(position_ids, torch.ones(1))
    torch.testing.assert_close(cos, cos_hf[0, :, :half], rtol=0, atol=tol)
    torch.testing.assert_close(sin, sin_hf[0, :, :half], rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_at_least_as_accurate_as_transformers(dtype):
    """transformers rotates in the input dtype; pykernels does the math in float32."""
    config = _hf_module_config("yarn")
    hf_rope = GPTNeoXRotaryEmbedding(config)
    ours = rope.from_hf_config(config, layout="BHSD")
    position_ids = torch.arange(50)[None].expand(2, -1)
    q, k = torch.randn(2, 4, 50, 64), torch.randn(2, 2, 50, 64)
    q64, k64 = _hf_rotate(hf_rope, q.double(), k.double(), position_ids, 64)
    q_hf, _ = _hf_rotate(hf_rope, q.to(dtype), k.to(dtype), position_ids, 64)
    q_pk, k_pk = ours(q.to(dtype), k.to(dtype), positions=position_ids)
    assert q_pk.dtype == dtype
    assert (q_pk.double() - q64).abs().max() <= (q_hf.double() - q64).abs().max()
    assert (k_pk.double() - k64).abs().max() <= 2 * (q_hf.double() - q64).abs().max()


# --------------------------------------------------------------------------
# Invariants and the float64 reference
# --------------------------------------------------------------------------

def _table(rot, n=64, base=10000.0, dtype=torch.float64):
    """(n, rot/2) cos/sin computed in float64 (so float64 tables are exact to float64)."""
    inv, _ = rope.inv_freq(rot, base)
    angles = torch.arange(n, dtype=torch.float64)[:, None] * inv.double()[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def test_conjugate_undoes_rotation():
    cos, sin = _table(32)
    for interleaved in (False, True):
        x = torch.randn(2, 17, 3, 48, dtype=torch.float64)
        y = pykernels.apply_rotary(x, cos, sin, interleaved=interleaved, positions=5)
        back = pykernels.apply_rotary(y, cos, sin, interleaved=interleaved, conjugate=True, positions=5)
        torch.testing.assert_close(back, x, rtol=0, atol=1e-12)


def test_scores_depend_only_on_relative_position():
    cos, sin = _table(64, n=512)
    q = torch.randn(1, 1, 1, 64, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 64, dtype=torch.float64)
    for delta in (0, 3, 100):
        scores = []
        for m in (delta, delta + 7, delta + 250):
            qm = pykernels.apply_rotary(q, cos, sin, positions=m)
            kn = pykernels.apply_rotary(k, cos, sin, positions=m - delta)
            scores.append(float((qm * kn).sum()))
        assert scores == pytest.approx([scores[0]] * 3, abs=1e-10), f"delta={delta}"


def test_offset_equals_slicing_the_table():
    cos, sin = _table(32)
    x = torch.randn(2, 9, 3, 32, dtype=torch.float64)
    for p in (0, 1, 30):
        a = pykernels.apply_rotary(x, cos, sin, positions=p)
        b = pykernels.apply_rotary(x, cos[p:], sin[p:])
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_interleaved_is_neox_after_permuting_features():
    rot, d = 32, 40
    cos, sin = _table(rot)
    x = torch.randn(2, 11, 3, d, dtype=torch.float64)
    # neox pair i = (i, i + R/2) sits at interleaved (2i, 2i+1).
    perm = torch.arange(d)
    perm[:rot] = torch.stack((torch.arange(rot // 2), torch.arange(rot // 2) + rot // 2), -1).flatten()
    neox = pykernels.apply_rotary(x, cos, sin)
    inter = pykernels.apply_rotary(x[..., perm], cos, sin, interleaved=True)
    torch.testing.assert_close(inter, neox[..., perm], rtol=0, atol=1e-14)


@pytest.mark.parametrize("inplace", [False, True])
def test_partial_rotary_tail_untouched(inplace):
    cos, sin = _table(16, dtype=torch.float32)
    x = torch.randn(2, 5, 3, 64)
    before = x.clone()
    y = pykernels.apply_rotary(x, cos, sin, inplace=inplace, positions=1)
    assert (y is x) == inplace
    assert torch.equal(y[..., 16:], before[..., 16:])
    torch.testing.assert_close(y[..., :16], rotary_ref(before[..., :16], cos[1:6], sin[1:6]).float())


POSITION_KINDS = ["int", "batch-offsets", "position-ids"]


def _positions(kind, b, s, gen_max=40):
    if kind == "int":
        return 3, torch.arange(s)[None].expand(b, -1) + 3
    if kind == "batch-offsets":
        off = torch.randint(0, gen_max, (b,))
        return off, off[:, None] + torch.arange(s)
    ids = torch.randint(0, gen_max + s, (b, s))
    return ids, ids


@pytest.mark.parametrize("kind", POSITION_KINDS)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("conjugate", [False, True])
@pytest.mark.parametrize("layout", ["BSHD", "BHSD"])
def test_against_float64_reference(kind, interleaved, conjugate, layout):
    b, s, hq, hk, d, rot = 3, 13, 4, 2, 48, 32
    cos, sin = _table(rot, n=128, dtype=torch.float32)
    positions, ids = _positions(kind, b, s)
    q = torch.randn(b, s, hq, d)
    k = torch.randn(b, s, hk, d)
    to = (lambda t: t) if layout == "BSHD" else (lambda t: t.transpose(1, 2).contiguous())
    q_out, k_out = pykernels.apply_rotary(to(q), cos, sin, interleaved, False, conjugate, k=to(k),
                                          positions=positions, layout=layout)
    back = (lambda t: t) if layout == "BSHD" else (lambda t: t.transpose(1, 2))
    for x, out in ((q, back(q_out)), (k, back(k_out))):
        ref = rotary_ref(x, cos[ids], sin[ids], interleaved=interleaved, conjugate=conjugate)
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)


def test_strided_views_and_inplace():
    """q and k as views into one packed qkv buffer; in place writes through them."""
    b, s, h, d = 2, 10, 4, 64
    cos, sin = _table(64, dtype=torch.float32)
    qkv = torch.randn(b, s, 3, h, d)
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    expect_q, expect_k = pykernels.apply_rotary(q.contiguous(), cos, sin, k=k.contiguous(), positions=4)
    got_q, got_k = pykernels.apply_rotary(q, cos, sin, k=k, positions=4)
    torch.testing.assert_close(got_q, expect_q, rtol=0, atol=0)
    v_before = qkv[:, :, 2].clone()
    ret_q, ret_k = pykernels.apply_rotary(q, cos, sin, inplace=True, k=k, positions=4)
    assert ret_q is q and ret_k is k
    torch.testing.assert_close(qkv[:, :, 0], expect_q, rtol=0, atol=0)
    torch.testing.assert_close(qkv[:, :, 1], expect_k, rtol=0, atol=0)
    assert torch.equal(qkv[:, :, 2], v_before)


def test_module_cache_grows_and_positions_kinds_agree():
    emb = rope.RotaryEmbedding(32)
    q = torch.randn(2, 8, 2, 32)
    k = torch.randn(2, 8, 1, 32)
    a = emb(q, k, seqlen_offset=1000)
    assert emb._cos.shape[0] >= 1008
    b_ = emb(q, k, positions=torch.tensor([1000, 1000]))
    c = emb(q, k, positions=torch.arange(1000, 1008)[None].expand(2, -1))
    for x, y in ((a, b_), (a, c)):
        torch.testing.assert_close(x[0], y[0], rtol=0, atol=0)
        torch.testing.assert_close(x[1], y[1], rtol=0, atol=0)


def test_module_attention_factor_scales_cos_and_sin():
    emb = rope.RotaryEmbedding(64, scaling={"rope_type": "yarn", "factor": 16.0,
                                            "original_max_position_embeddings": 1024})
    cos, sin = emb.cos_sin(10)
    assert emb.attention_factor == pytest.approx(0.1 * math.log(16) + 1)
    torch.testing.assert_close(cos ** 2 + sin ** 2, torch.full_like(cos, emb.attention_factor ** 2))


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

def _xcs(d=32, rot=32, n=16):
    cos, sin = _table(rot, n=n, dtype=torch.float32)
    return torch.randn(1, 4, 2, d), cos, sin


@pytest.mark.parametrize("call, exc, words", [
    (lambda: rope.RotaryEmbedding(7), ValueError, ["dim", "even", "7"]),
    (lambda: rope.inv_freq(64, 10000.0, {"rope_type": "linear"}), ValueError, ["factor", "nothing"]),
    (lambda: rope.inv_freq(64, 10000.0, {"rope_type": "yarn", "factor": 2.0}), ValueError,
     ["original_max_position_embeddings", "nothing"]),
    (lambda: rope.inv_freq(64, 10000.0, {"rope_type": "bogus"}), ValueError, ["rope_type", "bogus"]),
    (lambda: rope.inv_freq(64, 10000.0, {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0],
                                         "original_max_position_embeddings": 8, "factor": 2.0}),
     ValueError, ["short_factor", "32", "1"]),
    (lambda: rope.inv_freq(64, -1.0), ValueError, ["base", "-1"]),
    (lambda: rope.inv_freq(64, 10000.0, "yarn"), TypeError, ["scaling", "dict", "str"]),
])
def test_frequency_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_apply_errors():
    x, cos, sin = _xcs(d=16, rot=32)
    with pytest.raises(ValueError, match=r"cos/sin: expected .*rot_dim <= head dim 16.*rot_dim 32"):
        pykernels.apply_rotary(x, cos, sin)
    x, cos, sin = _xcs()
    with pytest.raises(TypeError, match=r"sin: expected cos's dtype \(torch.float32\), got torch.float16"):
        pykernels.apply_rotary(x, cos, sin.half())
    with pytest.raises(ValueError, match=r"cos: expected a tensor on q's device \(cpu\), got meta"):
        pykernels.apply_rotary(x, cos.to("meta"), sin)
    with pytest.raises(ValueError, match=r"positions: expected an offset .* <= 16 .*got offset 13 with S = 4"):
        pykernels.apply_rotary(x, cos, sin, positions=13)
    with pytest.raises(ValueError, match=r"positions: expected positions in \[0, 16\).*from 0 to 16"):
        pykernels.apply_rotary(x, cos, sin, positions=torch.tensor([[0, 1, 2, 16]]))
    with pytest.raises(ValueError, match=r"layout: expected one of \('BSHD', 'BHSD'\), got 'SBHD'"):
        pykernels.apply_rotary(x, cos, sin, layout="SBHD")
    with pytest.raises(ValueError, match=r"x: expected a 4-d BSHD tensor, got 3-d"):
        pykernels.apply_rotary(x[0], cos, sin)
    with pytest.raises(ValueError, match=r"x: expected a contiguous last .*got stride 2"):
        pykernels.apply_rotary(torch.randn(1, 4, 32, 2).transpose(2, 3), cos, sin)
    with pytest.raises(ValueError, match=r"k: expected batch, sequence and head dim \(1, 4, 32\)"):
        pykernels.apply_rotary(x, cos, sin, k=torch.randn(1, 5, 2, 32))
    with pytest.raises(TypeError, match=r"positions: expected an int32 or int64 tensor, got torch.float32"):
        pykernels.apply_rotary(x, cos, sin, positions=torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"positions: expected \(1,\) per-batch offsets or \(1, 4\) position ids"):
        pykernels.apply_rotary(x, cos, sin, positions=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x: expected dtype float16, bfloat16, float32 or float64, got torch.int32"):
        pykernels.apply_rotary(x.int(), cos, sin)
    with pytest.raises(ValueError, match=r"backend: expected None or one of"):
        pykernels.apply_rotary(x, cos, sin, backend="triton")


def test_module_errors():
    emb = rope.RotaryEmbedding(32, max_seq_len=16, grow=False)
    q = torch.randn(1, 4, 2, 32)
    emb(q, q, seqlen_offset=12)
    with pytest.raises(ValueError, match=r"positions: expected positions < max_seq_len = 16 \(grow=False\)"):
        emb(q, q, seqlen_offset=13)
    with pytest.raises(ValueError, match=r"positions: expected positions in \[0, 16\)"):
        emb(q, q, positions=torch.tensor([[0, 1, 2, 20]]))
    with pytest.raises(ValueError, match="max_seq_len"):
        rope.RotaryEmbedding(32, grow=False)
    with pytest.raises(TypeError, match="seqlen_offset"):
        rope.RotaryEmbedding(32)(q, q, seqlen_offset=1.5)


# --------------------------------------------------------------------------
# The op: opcheck, autograd, torch.compile
# --------------------------------------------------------------------------

def _op_args(k=True, kind="int", dtype=torch.float32):
    b, s = 2, 3
    cos, sin = _table(8, n=32, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    q = torch.randn(b, s, 2, 12, dtype=dtype)
    kk = torch.randn(b, s, 1, 12, dtype=dtype) if k else None
    ids = {"int": None, "batch-offsets": torch.tensor([0, 7]), "position-ids": torch.randint(0, 20, (b, s))}[kind]
    return q, kk, cos, sin, ids, 2 if ids is None else 0


@pytest.mark.parametrize("kind, with_k", [("int", True), ("position-ids", True), ("batch-offsets", False)])
def test_opcheck(kind, with_k):
    q, k, cos, sin, ids, off = _op_args(with_k, kind)
    q.requires_grad_(True)
    if k is not None:
        k.requires_grad_(True)
    torch.library.opcheck(torch.ops.pykernels.rotary.default, (q, k, cos, sin, ids, off, False, False, ""))
    torch.library.opcheck(torch.ops.pykernels.rotary_.default,
                          (q.detach().clone(), None if k is None else k.detach().clone(), cos, sin, ids, off, True,
                           True, ""))


@pytest.mark.parametrize("interleaved", [False, True])
def test_gradcheck_and_backward_is_conjugate(interleaved):
    q, k, cos, sin, ids, _ = _op_args(True, "position-ids", torch.float64)
    q.requires_grad_(True)
    k.requires_grad_(True)

    def f(q, k):
        return pykernels.apply_rotary(q, cos, sin, interleaved, k=k, positions=ids)

    torch.autograd.gradcheck(f, (q, k))
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    dq, dk = torch.autograd.grad(f(q, k), (q, k), (gq, gk))
    eq, ek = pykernels.apply_rotary(gq, cos, sin, interleaved, conjugate=True, k=gk, positions=ids)
    torch.testing.assert_close(dq, eq)
    torch.testing.assert_close(dk, ek)


def test_inplace_under_autograd_records_the_rotation():
    q, k, cos, sin, _, _ = _op_args(True, "int", torch.float64)
    leaf = q.clone().requires_grad_(True)
    x = leaf * 1.0
    pykernels.apply_rotary(x, cos, sin, inplace=True, positions=3)
    (g,) = torch.autograd.grad(x.sum(), leaf)
    expect = pykernels.apply_rotary(torch.ones_like(q), cos, sin, conjugate=True, positions=3)
    torch.testing.assert_close(g, expect)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    cos, sin = _table(32, n=64, dtype=torch.float32)
    emb = rope.RotaryEmbedding(32, max_seq_len=64)
    q, k = torch.randn(2, 8, 4, 48), torch.randn(2, 8, 2, 48)
    ids = torch.randint(0, 56, (2, 8))
    emb(q, k)  # builds the cache outside the graph

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(q, k, ids):
        a = pykernels.apply_rotary(q, cos, sin, k=k, positions=ids)
        b = emb(q, k, seqlen_offset=5)
        return a, b

    (qa, ka), (qb, kb) = step(q, k, ids)
    torch.testing.assert_close(qa, pykernels.apply_rotary(q, cos, sin, positions=ids))
    torch.testing.assert_close(kb, emb(q, k, seqlen_offset=5)[1])


# --------------------------------------------------------------------------
# The CUDA kernel's index math, run on the host
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    """csrc/rope/rotary.cuh compiled by g++ against host stand-ins (csrc/rope/emulation/).

    It runs the very kernel source one thread at a time, with the arguments
    the CuPy backend would launch it with, so CI checks the kernel's indexing,
    vector paths, strides, positions and tail handling without a GPU.
    """
    import ctypes
    import os
    import shutil
    import subprocess

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler to build the kernel emulation")
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
    lib = str(tmp_path_factory.mktemp("rope_host") / "rotary_host.so")
    cmd = [cxx, "-O1", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{root}/rope/emulation", f"-I{root}",
           f"{root}/rope/emulation/rotary_host.cpp", "-o", lib]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:  # a compiler is there, so this is a bug in the kernel source or the stand-ins
        pytest.fail(f"the host emulation does not build ({' '.join(cmd)}): {done.stderr[-1500:]}")
    return ctypes.CDLL(lib)


def _host_launch(lib, q, k, table, sin, scale, positions, offset, q_out, k_out, interleaved, conjugate):
    """Launch the host-compiled kernel with the CuPy backend's plan; returns the vector width used."""
    import ctypes

    import numpy as np

    from pykernels.backends.cupy.rope import _plan

    geometry = (ctypes.c_int * 3)()
    lib.pk_rotary_geometry(geometry)  # rotary.cuh's kThreads, kTargetBlocks, kMinRowsPerChunk
    vec, blocks, args = _plan(q, k, table, sin, scale, positions, offset, q_out, k_out, conjugate, tuple(geometry))
    to_c = {np.uint64: ctypes.c_void_p, np.int64: ctypes.c_longlong, np.int32: ctypes.c_int,
            np.float32: ctypes.c_float}
    cargs = [to_c[type(a)](a.item()) for a in args]
    dtype = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}[q.dtype]
    rc = lib.pk_rotary_host(ctypes.c_int(dtype), ctypes.c_int(vec), ctypes.c_int(int(interleaved)),
                            ctypes.c_int(int(sin is None)), ctypes.c_int(blocks[0]), ctypes.c_int(blocks[1]), *cargs)
    assert rc == 0, f"no host instantiation for {q.dtype} vec={vec}"
    return vec


HOST_CASES = [  # (dtype, D, rot, layout, strided, heads q/k)
    (torch.float32, 64, 64, "BSHD", False),
    (torch.bfloat16, 64, 48, "BSHD", False, (24, 16)),  # rows split over blockIdx.y (40 rows: 2 chunks)
    (torch.float16, 80, 64, "BHSD", True, (33, 1)),     # 6 items per row: spare threads in each block
    (torch.float32, 256, 256, "BSHD", False),           # 32 items per row: one head lane
    (torch.bfloat16, 70, 70, "BSHD", False),            # one-element path, 35 items per row
    (torch.float16, 600, 600, "BHSD", False),           # 300 items per row: threads loop over items
    (torch.bfloat16, 128, 64, "BSHD", False),    # partial rotary: tail copied by vectors
    (torch.float16, 64, 64, "BHSD", False),
    (torch.bfloat16, 64, 64, "BSHD", True),      # a packed qkv view
    (torch.float32, 48, 16, "BHSD", True),
    (torch.bfloat16, 12, 6, "BSHD", False),      # one-element path (R/2 = 3)
    (torch.float16, 20, 12, "BHSD", True),       # one-element path with strides
]


@pytest.mark.parametrize("case", HOST_CASES, ids=str)
@pytest.mark.parametrize("kind", POSITION_KINDS)
@pytest.mark.parametrize("inplace", [False, True])
def test_cuda_kernel_on_host(host_kernel, case, kind, inplace):
    from pykernels.backends.torch import rope as torch_rope

    dtype, d, rot, layout, strided = case[:5]
    hq, hk = case[5] if len(case) > 5 else (3, 2)
    b, s = 2, 9
    cos, sin = rope.RotaryEmbedding(rot).cos_sin(64)

    def rows(h):
        pad = 8 if strided else 0  # a view into a wider buffer: row stride D + 8, start 8 in
        x = torch.randn(b, s, h, d + pad).to(dtype)[..., pad:]
        return x.transpose(1, 2).contiguous().transpose(1, 2) if layout == "BHSD" else x

    q, k = rows(hq), rows(hk)
    positions = {"int": None, "batch-offsets": torch.tensor([0, 30]), "position-ids": torch.randint(0, 64, (b, s))}
    ids, offset = positions[kind], 3 if kind != "position-ids" else 0
    for interleaved, conjugate in ((False, False), (True, True)):
        want_q, want_k = torch.empty_like(q), torch.empty_like(k)
        torch_rope.apply_rotary(q, k, cos, sin, ids, offset, want_q, want_k, interleaved=interleaved,
                                conjugate=conjugate)
        if inplace:
            got_q, got_k = q.clone(), k.clone()
            src_q, src_k = got_q, got_k
        else:
            got_q, got_k = torch.full_like(q, float("nan")), torch.full_like(k, float("nan"))
            src_q, src_k = q, k
        vec = _host_launch(host_kernel, src_q, src_k, cos, sin, 1.0, ids, offset, got_q, got_k, interleaved,
                           conjugate)
        expect_vec = 1 if (rot // 2) % (16 // q.element_size()) else 16 // q.element_size()
        assert vec == expect_vec
        tol = 0 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(got_q, want_q, rtol=0, atol=tol + 1e-6, equal_nan=False)
        torch.testing.assert_close(got_k, want_k, rtol=0, atol=tol + 1e-6, equal_nan=False)


def test_cuda_kernel_on_host_freqs_and_bounds(host_kernel):
    """The in-kernel sincos variant matches the table at long positions; positions off the table give NaN rows."""
    from pykernels.backends.torch import rope as torch_rope

    emb = rope.RotaryEmbedding(64, 10000.0, {"rope_type": "yarn", "factor": 4.0,
                                            "original_max_position_embeddings": 64})
    cos, sin = emb.cos_sin(5000)
    q, k = torch.randn(2, 7, 4, 64), torch.randn(2, 7, 2, 64)
    ids = torch.randint(0, 5000, (2, 7))
    want_q, want_k = torch.empty_like(q), torch.empty_like(k)
    torch_rope.apply_rotary(q, k, cos, sin, ids, 0, want_q, want_k, interleaved=False, conjugate=False)
    got_q, got_k = torch.empty_like(q), torch.empty_like(k)
    _host_launch(host_kernel, q, k, emb.inv_freq, None, emb.attention_factor, ids, 0, got_q, got_k, False, False)
    torch.testing.assert_close(got_q, want_q, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_k, want_k, rtol=0, atol=1e-5)

    x = torch.randn(1, 4, 2, 16)
    small_cos, small_sin = rope.RotaryEmbedding(16).cos_sin(4)
    out = torch.zeros_like(x)
    _host_launch(host_kernel, x, None, small_cos, small_sin, 1.0, torch.tensor([[0, 3, 4, -1]]), 0, out, None,
                 False, False)
    assert torch.isnan(out).any(-1).any(-1)[0].tolist() == [False, False, True, True]
