"""Integrations with other libraries, each in its own module.

Nothing here is imported by ``import pykernels``: an integration module pulls
in its library only when it is imported itself, so those libraries stay
optional dependencies. ``pykernels.integrations.transformers`` plugs the
attention kernel and the rotary embedding into Hugging Face transformers.
"""
