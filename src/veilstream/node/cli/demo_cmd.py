"""`veil demo`: the whole network on embedded defaults, in a throw-away folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.table import Table

from veilstream.node.cli.common import console
from veilstream.node.network_demo import DemoFailed, report_ok, run_network_demo
from veilstream.swarm import run


def _eth(wei: int) -> str:
    return f"{wei / 10**18:.6f}"


def demo(
    seconds: float = typer.Option(30.0, "--seconds", help="Length of the generated sample video."),
    keep: Path = typer.Option(None, "--keep", help="Keep every node's folder in this directory."),
) -> None:
    """Run a whole local network: chain, tracker, creator + key agent, two seeders, a plain
    libtorrent seeder and a viewer that streams, seeks, pays per slice and decrypts."""
    with tempfile.TemporaryDirectory(prefix="veil-demo-") as scratch:
        root = Path(keep) if keep else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        with console.status("running the network…") as status:
            report = run(run_network_demo(root, seconds, log=lambda name, detail: status.update(f"{name}: {detail}")))
    steps = Table("step", "what happened", title="Veilstream demo", title_justify="left")
    for name, detail in report.steps:
        steps.add_row(name, detail)
    console.print(steps)
    money = Table("source", "kind", "slices", "signed (ETH)", "→ seeder (ETH)", "→ creator (ETH)",
                  title="Who delivered and who was paid (on chain)", title_justify="left")
    for row in report.sources:
        if row.kind == "Veilstream":
            money.add_row(row.name, row.kind, str(row.slices), _eth(row.signed_wei), _eth(row.seeder_part_wei),
                          _eth(row.creator_part_wei))
        else:  # a plain BitTorrent peer takes no cheques: its slices' price goes whole to the creator
            money.add_row(row.name, row.kind, str(row.slices), "in the creator's cheques", "— (takes no cheques)",
                          _eth(row.creator_part_wei))
    console.print(money)
    facts = Table(show_header=False, box=None)
    facts.add_row("creator received", f"{_eth(report.creator_received_wei)} ETH "
                  f"({'split matches the registered terms' if report.split_matches_terms else '[red]SPLIT MISMATCH[/]'})")
    facts.add_row("on-chain", f"{report.transactions} transactions, {report.gas_used:,} gas (for {report.slice_count} slices)")
    facts.add_row("first decrypted byte", f"{report.first_byte_ms:.0f} ms after the request")
    facts.add_row("throughput", f"{report.throughput_mib_s:.1f} MiB/s paid, verified and decrypted")
    facts.add_row("keys", f"{report.key_deliveries} sealed deliveries, {report.audit_entries} audit-log entries")
    facts.add_row("seeders' disks", "no plaintext, no keys" if not (report.plaintext_on_seeders or report.keys_on_seeders)
                  else "[red]PLAINTEXT OR KEYS FOUND[/]")
    facts.add_row("result", "[green]byte-for-byte identical[/]" if report.identical else "[red]DIFFERENT[/]")
    console.print(facts)
    if not report_ok(report):
        raise DemoFailed("the demo did not verify: see the tables above")
    console.print(f"[green]✓ demo passed[/]: content {report.content_id}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
