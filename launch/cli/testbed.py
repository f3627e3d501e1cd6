"""`mnist-dist testbed`: hosts on this machine (launch.testbed), made, used and removed by hand."""

from __future__ import annotations

from launch.testbed import command


def add(commands) -> None:
    bed = commands.add_parser(
        "testbed",
        help="hosts on this machine (network namespaces) to try multi-host runs; needs root",
        description="Make N hosts on this machine, each a network namespace with its own address, hostname "
        "and hosts file on a private bridge, optionally with shaped links; run commands on them; remove "
        "them. `sweep --testbed` makes its own.",
    )
    command.add_arguments(bed)
    bed.set_defaults(func=command.command)
