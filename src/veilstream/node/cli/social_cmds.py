"""`veil post`, `feed`, `card`, `react`, `comment`, `repost`, `follow`, `profile`, `relay`: the social feed.

Relays: `--relay URL` (repeatable) on every command; else the list in
`$VEIL_HOME/social/relays.json` (`{"relays": ["wss://…"]}`); else the machine's local
relay: the one `veil relay` runs, or one on 127.0.0.1:7447 (`VEIL_RELAY_PORT`), or one
started for the command. Every vault of a user shares the local relay's store
(`VEIL_RELAY_DATA`, else `$XDG_DATA_HOME/veilstream/relay`), so one vault's `veil post`
reaches another's `veil feed`; see `veilstream.node.relays`. The local index lives in
`$VEIL_HOME/social/`.

Text from strangers (titles, names, comments) is shown as text: no Rich markup, no
terminal control characters. `feed --json` and `card --json` print one JSON document.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from veilstream.node import cards
from veilstream.node.cards import (
    card_details,
    card_of_held_content,
    check_card_ref,
    find_card,
    indexed_card_document,
    open_index,
    parse_pubkey,
    with_pool,
)
from veilstream.node.cli.chain_cmds import format_ether
from veilstream.node.cli.common import console, err_console, open_vault, unlock_identity
from veilstream.node.relays import relay_port, shared_relay_dir, social_home
from veilstream.social import kinds
from veilstream.social.embedded_relay import EmbeddedRelay
from veilstream.social.errors import SocialError
from veilstream.social.index import CardRow, FeedIndex
from veilstream.social.relay_client import PublishOutcome, RelayPool
from veilstream.social.sync import engagement_filters, publish, sync

T = TypeVar("T")

RELAY_OPTION_HELP = "Relay URL (repeatable); default: the configured list, else the local relay."


def _relay_option() -> list[str]:
    return typer.Option([], "--relay", help=RELAY_OPTION_HELP, show_default=False)


def _session(home: Path, relays: list[str], work: Callable[[RelayPool, FeedIndex], Awaitable[T]]) -> T:
    return with_pool(home, relays, work, on_wait=lambda note: err_console.print(Text(note, style="dim"), soft_wrap=True))


def _publisher(pool: RelayPool, index: FeedIndex) -> cards.Publish:
    return lambda event: publish(pool, index, event)


def _report(outcomes: list[PublishOutcome]) -> None:
    for outcome in outcomes:
        mark = Text("✓", style="green") if outcome.accepted else Text("✗", style="red")
        detail = f" ({outcome.message})" if outcome.message else ""  # a relay's words: text, not markup
        _print_line("  ", mark, " ", shown(f"{outcome.relay}{detail}"))


# Escape sequences in a stranger's title could rewrite the terminal; bidi overrides could
# make one text read as another.
_UNSHOWABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """A stranger's text made safe for a terminal (pass it to `Text`, never as markup)."""
    return _UNSHOWABLE.sub("\ufffd", text)


def _print_line(*parts: str | Text) -> None:
    """One line, never wrapped nor cut by us: a magnet stays whole in a pipe or a narrow terminal."""
    console.print(Text.assemble(*parts), soft_wrap=True)


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


# --- post -------------------------------------------------------------------------------------


def post(
    content_id: str = typer.Argument(..., help="Content id (64 hex) or magnet of content in your vault."),
    title: str = typer.Option(..., "--title", help="The card's title."),
    description: str = typer.Option("", "--description", help="A longer description."),
    tag: list[str] = typer.Option([], "--tag", help="A hashtag (repeatable)."),
    source: Path | None = typer.Option(None, "--source", help="The plaintext file, for previews without decrypting."),
    no_previews: bool = typer.Option(False, "--no-previews", help="Publish the card without previews."),
    blob_server: list[str] = typer.Option([], "--blob-server", help="HTTP server holding the previews (repeatable)."),
    pow_bits: int = typer.Option(0, "--pow", min=0, max=32, help="NIP-13 proof of work, in leading zero bits."),
    relay: list[str] = _relay_option(),
) -> None:
    """Publish the card of a content you published: title, terms, previews, magnet."""
    from veilstream.content import parse_content_id

    cid = parse_content_id(content_id)
    vault, identity = unlock_identity()
    card = card_of_held_content(vault, cid, title, description=description, tags=tuple(tag),
                                with_previews=not no_previews, source=source, blob_servers=tuple(blob_server),
                                step=console.status)
    previews = card.previews
    event = kinds.build_card(identity, card, pow_bits=pow_bits)
    outcomes = _session(vault.home, relay, lambda pool, index: publish(pool, index, event))
    console.print(f"[green]✓[/] card [bold]{event.id}[/] for {cid[:16]}… ({len(previews)} preview{'' if len(previews) == 1 else 's'})")
    _report(outcomes)


# --- feed and card -----------------------------------------------------------------------------


def _count(value: int) -> str:
    return f"{value:,}" if value else "[dim]0[/]"


def _author(row: CardRow) -> str:
    return shown(row.author_name) if row.author_name else row.pubkey[:12] + "…"


def _feed_table(rows: list[CardRow]) -> Table:
    table = Table("card", "title", "by", "reactions", "comments", "reposts", "views")
    for row in rows:
        title = Text(shown(row.card.title), style="bold")
        if row.chain_status:
            title.append(" ⛓", style="green")
        table.add_row(
            row.id[:12], title, Text(_author(row)), _count(row.reactions), _count(row.comments),
            _count(row.reposts), _count(row.views),
        )
    return table


def _print_long(rows: list[CardRow]) -> None:
    for row in rows:
        _print_line(
            Text(row.id[:12], style="cyan"), "  ", Text(shown(row.card.title), style="bold"), f"  by {_author(row)}  ",
            Text(_engagement({"reactions": row.reactions, "comments": row.comments, "reposts": row.reposts,
                              "views": row.views}), style="dim"),
        )
        _print_line("  content  ", row.card.content_id)
        _print_line("  magnet   ", row.card.magnet or Text("none on the card: play by content id", style="dim"))


def _counted(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def _engagement(counts: dict[str, int]) -> str:
    return " · ".join(_counted(counts[key], key[:-1]) for key in ("reactions", "comments", "reposts", "views"))


def feed(
    search: str | None = typer.Option(None, "--search", help="Words that must all appear (word* for a prefix)."),
    following: bool = typer.Option(False, "--following", help="Only cards by people you follow."),
    top: bool = typer.Option(False, "--top", help="Most engaged first, instead of newest first."),
    limit: int = typer.Option(30, "--limit", min=1, max=500, help="How many cards."),
    offline: bool = typer.Option(False, "--offline", help="Show the local index without asking relays."),
    long: bool = typer.Option(False, "--long", help="Also each card's content id and magnet, whole."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (for scripts)."),
    relay: list[str] = _relay_option(),
) -> None:
    """Catch up from the relays and show the feed: titles with reaction, comment and view counts."""
    vault = open_vault()
    me = vault.public_identity().get("nostr_pubkey")
    notes = err_console if as_json else console
    if not offline:
        report = _session(vault.home, relay, lambda pool, index: sync(pool, index, me=me))
        if report.refused:
            log_path = social_home(vault.home) / "social.log"
            notes.print(f"[yellow]{report.refused} events refused[/] (reasons in {log_path})", soft_wrap=True)
    with open_index(vault.home) as index:
        authors = index.following(me) if following and me else None
        nobody = following and not authors
        rows = [] if nobody else index.feed(search=search, authors=authors, order="top" if top else "time", limit=limit)
        if nobody:
            notes.print("you follow no one yet: `veil follow PUBKEY`")
        if as_json:
            _print_json({"cards": [indexed_card_document(index, row) for row in rows]})
            return
    if nobody:
        return
    if not rows:
        console.print(Text("no cards" + (f" match {shown(search)!r}" if search else "")))
    elif long:
        _print_long(rows)
    else:
        console.print(_feed_table(rows))


def _when(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def _size(count: int) -> str:
    return f"{count:,} bytes"


def _person(pubkey: str, name: str) -> Text:
    return Text.assemble(pubkey, (f"  ({shown(name)})", "bold") if name else "")


def _print_card(doc: dict[str, Any]) -> None:
    def field(label: str, *value: str | Text) -> None:
        _print_line(Text(f"{label:<13}", style="dim"), *value)

    _print_line(Text(shown(doc["title"]), style="bold"), Text(" ⛓ registered on chain", style="green")
                if doc["chain_status"] else "")
    field("card", doc["id"])
    field("creator", _person(doc["pubkey"], doc["author_name"]))
    field("posted", _when(doc["created_at"]))
    field("content id", doc["content_id"])
    field("magnet", doc["magnet"] or Text("none on the card: play by content id", style="dim"))
    price = int(doc["price_per_slice_wei"])
    total = (f" · {format_ether(int(doc['total_wei']))} for all {doc['slice_count']:,} slices"
             if doc["total_wei"] is not None else " · total unknown: the card does not say how many slices")
    field("price", f"{format_ether(price)} per slice{total}")
    share = doc["seeder_share_bps"]
    field("seeder share", f"{share / 100:g}% ({format_ether(int(doc['seeder_part_per_slice_wei']))} per slice to the "
                          "seeder that delivers it)")
    about = [doc["mime"] or "type unknown"]
    if doc["duration_s"] is not None:
        about.append(f"{doc['duration_s']:.1f} s")
    if doc["size_bytes"] is not None:
        about.append(_size(doc["size_bytes"]))
    field("content", shown(" · ".join(about)))
    if doc["tags"]:
        field("tags", shown(" ".join(f"#{tag}" for tag in doc["tags"])))
    field("engagement", _engagement(doc["counts"]))
    for i, preview in enumerate(doc["previews"]):
        field("previews" if i == 0 else "", shown(f"{preview['role']} {preview['mime']} {_size(preview['size'])} "),
              preview["sha256"])
        for url in preview["urls"]:
            field("", "  ", shown(url))
    if not doc["previews"]:
        field("previews", Text("none", style="dim"))
    if doc["description"]:
        _print_line(Text("description", style="dim"))
        for line in doc["description"].splitlines():
            _print_line("  ", shown(line))
    comments = doc["comments"]
    _print_line(Text(f"comments ({len(comments)})" if comments else "comments: none yet", style="dim"))
    for c in comments:
        reply = f" · reply to {c['parent_id'][:12]}…" if c["parent_id"] != doc["id"] else ""
        _print_line("  ", _person(c["pubkey"], c["author_name"]), Text(f" · {_when(c['created_at'])}{reply}", style="dim"))
        for line in c["text"].splitlines() or [""]:
            _print_line("    ", shown(line))


def card(
    card_id: str = typer.Argument(..., help="Card id, or a unique prefix of 8+ hex digits."),
    offline: bool = typer.Option(False, "--offline", help="Show the local index without asking relays."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (for scripts)."),
    relay: list[str] = _relay_option(),
) -> None:
    """Show a card whole: creator, content id, magnet (for `veil play`), terms, previews, comments."""
    check_card_ref(card_id)
    vault = open_vault()
    if offline:
        with open_index(vault.home) as index:
            row = index.card(card_id.strip())
            if row is None:
                raise SocialError(f"no card starting {card_id.strip().lower()!r} in the local index")
            found = row.id
    else:

        async def work(pool: RelayPool, index: FeedIndex) -> str:
            event = await find_card(pool, index, card_id)
            fetched, _ = await pool.fetch(engagement_filters([event.id]))
            index.ingest_many(fetched)
            people = sorted({event.pubkey, *(c.pubkey for c in index.comments(event.id))})
            fetched, _ = await pool.fetch([{"kinds": [kinds.PROFILE], "authors": people}])
            index.ingest_many(fetched)
            return event.id

        found = _session(vault.home, relay, work)
    with open_index(vault.home) as index:
        document = card_details(index, found)
    if as_json:
        _print_json(document)
    else:
        _print_card(document)


# --- react, comment, repost, follow, profile --------------------------------------------------


def react(
    card_id: str = typer.Argument(..., help="Card id, or a unique prefix of 8+ hex digits."),
    emoji: str = typer.Option("+", "--emoji", help="'+' (like), '-' (dislike) or an emoji."),
    relay: list[str] = _relay_option(),
) -> None:
    """React to a card (NIP-25)."""
    check_card_ref(card_id)
    vault, identity = unlock_identity()

    async def work(pool: RelayPool, index: FeedIndex) -> list[PublishOutcome]:
        _, outcomes = await cards.react(pool, index, identity, card_id, emoji, _publisher(pool, index))
        return outcomes

    outcomes = _session(vault.home, relay, work)
    console.print(f"[green]✓[/] reacted {emoji}")
    _report(outcomes)


def comment(
    card_id: str = typer.Argument(..., help="Card id, or a unique prefix of 8+ hex digits."),
    text: str = typer.Argument(..., help="The comment."),
    reply_to: str | None = typer.Option(None, "--reply-to", help="Id of the comment this answers."),
    relay: list[str] = _relay_option(),
) -> None:
    """Comment on a card, or reply to a comment on it (NIP-22)."""
    check_card_ref(card_id)
    vault, identity = unlock_identity()

    async def work(pool: RelayPool, index: FeedIndex) -> list[PublishOutcome]:
        _, outcomes = await cards.comment(pool, index, identity, card_id, text, reply_to, _publisher(pool, index))
        return outcomes

    outcomes = _session(vault.home, relay, work)
    console.print("[green]✓[/] commented")
    _report(outcomes)


def repost(
    card_id: str = typer.Argument(..., help="Card id, or a unique prefix of 8+ hex digits."),
    relay: list[str] = _relay_option(),
) -> None:
    """Repost a card to your followers (NIP-18)."""
    check_card_ref(card_id)
    vault, identity = unlock_identity()

    async def work(pool: RelayPool, index: FeedIndex) -> list[PublishOutcome]:
        _, outcomes = await cards.repost(pool, index, identity, card_id, _publisher(pool, index))
        return outcomes

    outcomes = _session(vault.home, relay, work)
    console.print("[green]✓[/] reposted")
    _report(outcomes)


def follow(
    pubkeys: list[str] = typer.Argument(..., help="Public keys (hex or npub) to follow."),
    unfollow: bool = typer.Option(False, "--unfollow", help="Stop following them instead."),
    relay: list[str] = _relay_option(),
) -> None:
    """Follow (or unfollow) people: publishes your whole follow list (NIP-02)."""
    wanted = [parse_pubkey(p) for p in pubkeys]
    vault, identity = unlock_identity()

    async def work(pool: RelayPool, index: FeedIndex) -> tuple[list[PublishOutcome], int]:
        change = {"unfollow": wanted} if unfollow else {"follow": wanted}
        outcomes, updated = await cards.change_follows(pool, index, identity, **change, publish=_publisher(pool, index))
        return outcomes, len(updated)

    outcomes, count = _session(vault.home, relay, work)
    console.print(f"[green]✓[/] {'unfollowed' if unfollow else 'following'} {len(wanted)}; you follow {count}")
    _report(outcomes)


def profile(
    pubkey: str | None = typer.Argument(None, help="Whose profile to show (default: yours)."),
    name: str | None = typer.Option(None, "--name", help="Set your display name."),
    about: str | None = typer.Option(None, "--about", help="Set your description."),
    picture: str | None = typer.Option(None, "--picture", help="Set your picture URL."),
    relay: list[str] = _relay_option(),
) -> None:
    """Show a profile, or update yours (kind 0, with your wallet address bound by its signature)."""
    updating = any(v is not None for v in (name, about, picture))
    if updating and pubkey:
        raise SocialError("only your own profile can be updated: drop the PUBKEY argument")
    if updating:
        vault, identity = unlock_identity()
        me = identity.nostr_pubkey

        async def update(pool: RelayPool, index: FeedIndex) -> list[PublishOutcome]:
            return await cards.update_profile(pool, index, identity, name=name, about=about, picture=picture,
                                              publish=_publisher(pool, index))

        outcomes = _session(vault.home, relay, update)
        console.print("[green]✓[/] profile updated")
        _report(outcomes)
        target = me
    else:
        vault = open_vault()
        target = parse_pubkey(pubkey) if pubkey else vault.public_identity()["nostr_pubkey"]

        async def fetch(pool: RelayPool, index: FeedIndex) -> None:
            events, _ = await pool.fetch([{"kinds": [kinds.PROFILE, kinds.RELAY_LIST], "authors": [target]}])
            index.ingest_many(events)

        _session(vault.home, relay, fetch)
    with open_index(vault.home) as index:
        found = index.profile(target)
        relays = index.relay_list(target)
    table = Table(show_header=False, box=None)
    table.add_row("nostr key", target)
    if found is None:
        table.add_row("profile", "[dim]none published[/]")
    else:
        table.add_row("name", Text(shown(found["name"])) if found["name"] else "[dim]—[/]")
        table.add_row("about", Text(shown(found["about"])) if found["about"] else "[dim]—[/]")
        if found["picture"]:
            table.add_row("picture", Text(shown(found["picture"])))
        wallet = found["wallet_address"]
        if wallet:
            mark = "[green]✓ signed by the wallet[/]" if found["wallet_verified"] else "[red]✗ binding does not verify[/]"
            table.add_row("wallet", Text.assemble(shown(wallet), "  ", Text.from_markup(mark)))
    if relays:
        table.add_row("relays", Text(shown(", ".join(r.url for r in relays))))
    console.print(table)


# --- the machine's local relay -------------------------------------------------------------------


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def relay_cmd(
    listen: str | None = typer.Option(None, "--listen", help="HOST:PORT to listen on (default 127.0.0.1:7447, "
                                      "or VEIL_RELAY_PORT)."),
    data: Path | None = typer.Option(None, "--data", help="Where to keep the events (default: VEIL_RELAY_DATA, "
                                     "else $XDG_DATA_HOME/veilstream/relay)."),
) -> None:
    """Run the machine's local relay in the foreground; every vault's social commands use it. Ctrl-C stops it."""
    from veilstream.node.cli.swarm_cmds import parse_host_port

    host, port = parse_host_port(listen, what="--listen") if listen else ("127.0.0.1", relay_port())
    store = (data or shared_relay_dir()).expanduser()
    signal.signal(signal.SIGTERM, _interrupt)  # a plain `kill` stops it as Ctrl-C does
    relay = EmbeddedRelay(store, port=port, host=host, shared=True)
    with relay:
        try:
            console.print(f"relay at [bold]{relay.url}[/]; events in {store}", soft_wrap=True)
            console.print("social commands of every vault on this machine use it; Ctrl-C stops it")
            code = relay.wait()
        except KeyboardInterrupt:
            code = None
    if code is not None:
        raise SocialError(f"the relay stopped by itself (exit {code}); see {relay.log_path}")
    console.print(f"relay stopped; events kept in {store}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("post")(post)
    app.command("feed")(feed)
    app.command("card")(card)
    app.command("relay")(relay_cmd)
    app.command("react")(react)
    app.command("comment")(comment)
    app.command("repost")(repost)
    app.command("follow")(follow)
    app.command("profile")(profile)
