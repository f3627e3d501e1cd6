"""The testbed by hand: `mnist-dist testbed up|exec|rsh|down` (also `python -m launch.testbed`)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from launch import log
from launch.errors import UserError, report_and_exit
from launch.testbed import hosts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="make N hosts; prints the tag")
    up.add_argument("n", type=int)
    up.add_argument("--rate", help="limit each host's link, e.g. 1gbit or 10gbit")
    up.add_argument("--profile", choices=hosts.PROFILES, help="a network profile: its rate (loopback: unshaped)")
    ex = sub.add_parser("exec", help="run a command on a host")
    ex.add_argument("tag")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    rsh = sub.add_parser("rsh", help="OpenMPI's rsh agent: `--mca plm_rsh_agent 'mnist-dist testbed rsh TAG'`")
    rsh.add_argument("tag")
    rsh.add_argument("words", nargs=argparse.REMAINDER, help="ssh-style options, the host, the remote command")
    down = sub.add_parser("down", help="end every process and remove the testbed")
    down.add_argument("tag")


def command(args: argparse.Namespace) -> int:
    if args.action == "up":
        why = hosts.missing_tools()
        if why:
            raise UserError(why)
        bed = hosts.Testbed.up(args.n, hosts.PROFILES[args.profile] if args.profile else args.rate)
        print(bed.tag)
        for h in bed.hosts:
            print(f"  {h.name} {h.address}  (mnist-dist testbed exec {bed.tag} {h.name} -- CMD)", file=sys.stderr)
        return 0
    bed = hosts.load(args.tag)
    if args.action == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        return subprocess.run(bed.command(args.host, cmd)).returncode
    if args.action == "rsh":
        # As ssh would: skip options (OpenMPI passes -x and the like), then the host, then a shell
        # command line, run by the host's shell.
        words = list(args.words)
        while words and words[0].startswith("-"):
            words.pop(0)
        host, remote = words[0], " ".join(words[1:])
        return subprocess.run(bed.command(host, ["sh", "-c", remote])).returncode
    bed.down()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testbed", description=hosts.__doc__.split("\n\n")[0])
    add_arguments(parser)
    log.setup("testbed")
    try:
        return command(parser.parse_args(argv))
    except UserError as exc:
        report_and_exit(exc)


if __name__ == "__main__":
    sys.exit(main())
