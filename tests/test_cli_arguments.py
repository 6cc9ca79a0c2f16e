"""The ``botmain`` command's own refusals of its arguments, before it reaches anything."""

from __future__ import annotations

from click.testing import CliRunner

from cli.main import main


def test_decide_refuses_a_negative_size_by_name_and_says_how_to_sell():
    result = CliRunner().invoke(main, ["decide", "SOL-PERP", "buy", "-5"])
    assert result.exit_code == 2
    assert "No such option" not in result.output
    assert "Invalid value for 'SIZE': -5: SIZE is an amount in base units" in result.output
    assert "(botmain decide SOL-PERP sell 5)" in result.output


def test_decide_refuses_a_zero_size_and_a_misspelt_option():
    zero = CliRunner().invoke(main, ["decide", "SOL-PERP", "sell", "0"])
    assert zero.exit_code == 2 and "SIZE is an amount in base units (SOL for SOL-PERP), above 0" in zero.output
    typo = CliRunner().invoke(main, ["decide", "SOL-PERP", "sell", "2", "--hrizon", "3"])
    assert typo.exit_code == 2 and "--hrizon" in typo.output


def test_decide_help_says_the_unit_of_size():
    result = CliRunner().invoke(main, ["decide", "--help"])
    assert "SIZE is in base units of the instrument's asset" in result.output
