"""Fault names from the CLI and the fake gateway's argument parsing."""

from __future__ import annotations

import argparse

import pytest

from ibflow.fake_ib_gateway import ConnectivityFlap, FaultName, Faults
from ibflow.fake_ib_gateway.cli import DEFAULT_PORT, add_arguments

pytestmark = pytest.mark.unit


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_a_well_behaved_paper_gateway() -> None:
    args = parse()
    assert (args.host, args.port, args.faults, args.enforce_pacing) == ("127.0.0.1", DEFAULT_PORT, [], True)
    assert Faults.from_names(args.faults) == Faults()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (FaultName.PACING, Faults(pacing_violation=True)),
        (FaultName.SILENCE, Faults(silence=True)),
        (FaultName.UNKNOWN_CONTRACT, Faults(unknown_symbols=frozenset({"*"}))),
        (FaultName.FLAP, Faults(connectivity_flap=ConnectivityFlap(data_lost=False))),
        (FaultName.FLAP_DATA_LOST, Faults(connectivity_flap=ConnectivityFlap(data_lost=True))),
        (FaultName.DROP_SOCKET, Faults(drop_socket_on_historical=True)),
        (FaultName.CLIENT_ID_IN_USE, Faults(client_id_in_use=True)),
        (FaultName.NO_MARKET_DATA_PERMISSION, Faults(no_market_data_permission=True)),
        (FaultName.LOGIN_REFUSED, Faults(login_refused=True)),
    ],
)
def test_each_fault_name_sets_its_fault(name: FaultName, expected: Faults) -> None:
    assert Faults.from_names(parse("--fault", name.value).faults) == expected


def test_fault_options_reach_the_faults() -> None:
    args = parse(
        "--port", "0", "--fault", "unknown-contract", "--unknown-symbol", "ibm", "--unknown-symbol", "FB",
        "--fault", "flap-data-lost", "--flap-every", "30", "--flap-outage", "2.5", "--no-pacing",
    )
    faults = Faults.from_names(
        args.faults, unknown_symbols=args.unknown_symbols, flap_every=args.flap_every, flap_outage=args.flap_outage
    )
    assert faults.unknown_symbols == {"IBM", "FB"}
    assert faults.connectivity_flap == ConnectivityFlap(data_lost=True, every=30, outage=2.5)
    assert (args.port, args.enforce_pacing) == (0, False)


def test_unknown_symbols_match_any_case_and_the_wildcard_matches_all() -> None:
    assert Faults(unknown_symbols=frozenset({"aapl"})).is_unknown("AAPL")
    assert not Faults(unknown_symbols=frozenset({"AAPL"})).is_unknown("MSFT")
    assert Faults(unknown_symbols=frozenset({"*"})).is_unknown("MSFT")


@pytest.mark.parametrize(
    "names", [["flap", "flap-data-lost"], ["no-such-fault"]]
)
def test_contradictory_or_unknown_fault_names_are_rejected(names: list[str]) -> None:
    with pytest.raises(ValueError):
        Faults.from_names(names)


def test_unknown_symbols_need_the_unknown_contract_fault() -> None:
    with pytest.raises(ValueError):
        Faults.from_names([], unknown_symbols=["AAPL"])


def test_the_cli_rejects_an_unknown_fault_name() -> None:
    with pytest.raises(SystemExit):
        parse("--fault", "meteor-strike")
