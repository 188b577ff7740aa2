"""Placeholder: RoPE frequencies and RotaryEmbedding (issue 3)."""


class RotaryEmbedding:  # pragma: no cover - replaced by issue 3
    pass


def apply_rotary(*args, **kwargs):  # pragma: no cover - replaced by issue 3
    raise NotImplementedError("apply_rotary lands with issue 3")
