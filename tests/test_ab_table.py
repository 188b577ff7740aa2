"""scripts/dev/ab_table.py: the results READMEs' A/B tables, drawn from attn_ab.py's JSON lines."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "dev"))
import ab_table  # noqa: E402

VARIANTS = ab_table.VARIANT_ORDER


def _records(build, seqlen, head_dim, values):
    return [dict(gpu="H100", commit="abc1234", knobs=build, seqlen=seqlen, head_dim=head_dim, variant=v, tflops=t)
            for v, t in zip(VARIANTS, values)]


def test_cells_rows_and_change_against_the_base():
    recs = (_records("auto", 1024, 128, [280.4, 280, 281, 263]) + _records("pick", 1024, 128, [358, 360, 361, 329])
            + _records("auto", 16384, 128, [640, 462, 415, 619]) + _records("pick", 16384, 128, [640.2, 440, 409, 618]))
    md = ab_table.tables(recs, base="auto")
    assert "| S | auto | pick | pick vs auto |" in md
    assert "| 1K | 280 / 280 / 281 / 263 | 358 / 360 / 361 / 329 | +28% / +29% / +28% / +25% |" in md
    # A change that rounds to zero reads 0%, not -0% or +0%.
    assert "| 16K | 640 / 462 / 415 / 619 | 640 / 440 / 409 / 618 | 0% / -5% / -1% / 0% |" in md
    assert md.index("| 1K") < md.index("| 16K")


def test_head_dims_apart_missing_variants_and_reruns():
    recs = _records("a", 2048, 64, [1, 2, 3, 4])[:3] + _records("a", 2048, 128, [5, 6, 7, 8])
    recs += _records("a", 2048, 128, [9, 10, 11, 12])  # a rerun appended: the last figures count
    md = ab_table.tables(recs)
    d64, d128 = md.split("d = 128")
    assert "| 2K | 1 / 2 / 3 / — |" in d64
    assert "| 2K | 9 / 10 / 11 / 12 |" in d128 and "| 5 /" not in d128


def test_unknown_base_is_an_error():
    with pytest.raises(SystemExit, match="no such build"):
        ab_table.tables(_records("auto", 1024, 128, [1, 2, 3, 4]), base="pick")


def test_command_line(tmp_path, capsys):
    f = tmp_path / "ab.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in _records("auto", 1000, 128, [1, 2, 3, 4])) + "\n")
    ab_table.main([str(f)])
    out = capsys.readouterr().out
    assert out.startswith("H100; commit abc1234; 4 records")
    assert "| 1000 | 1 / 2 / 3 / 4 |" in out
