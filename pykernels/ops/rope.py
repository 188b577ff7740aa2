"""Placeholder: pykernels::rotary op registration (issue 3)."""
