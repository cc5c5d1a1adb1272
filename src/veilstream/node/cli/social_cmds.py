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
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from veilstream.node.cards import check_card_ref, find_card, find_event, open_index, with_pool
from veilstream.node.cli.chain_cmds import format_ether
from veilstream.node.cli.common import console, err_console, open_vault, unlock_identity
from veilstream.node.relays import relay_port, shared_relay_dir, social_home
from veilstream.social import kinds
from veilstream.social.blobs import BlobStore
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


def card_for_content(
    content_id: str,
    magnet: str,
    price_per_slice_wei: int,
    seeder_share_bps: int,
    duration_s: float | None,
    mime: str,
    title: str,
    description: str = "",
    tags: tuple[str, ...] = (),
    size_bytes: int | None = None,
    previews: tuple[kinds.PreviewRef, ...] = (),
    blob_servers: tuple[str, ...] = (),
    slice_count: int | None = None,
) -> kinds.ContentCard:
    """The card for a content, from explicit fields: the seam between the content layer and the feed."""
    return kinds.ContentCard(
        content_id=content_id, title=title, description=description, tags=tags, mime=mime,
        duration_s=duration_s, magnet=magnet, price_per_slice_wei=price_per_slice_wei,
        seeder_share_bps=seeder_share_bps, size_bytes=size_bytes, previews=previews, blob_servers=blob_servers,
        slice_count=slice_count,
    )


def _previews_for(vault, content_id: str, source: Path | None, mime: str) -> tuple[kinds.PreviewRef, ...]:
    from veilstream.content import decrypt_to
    from veilstream.social.previews import make_previews, store_previews

    store = BlobStore(social_home(vault.home) / "blobs")
    if source is not None:
        return tuple(store_previews(make_previews(source, mime or None), store))
    torrent = vault.torrent(content_id)
    ring = vault.keyring(content_id)
    suffix = Path(torrent.name).suffix if "." in torrent.name else ""
    with tempfile.TemporaryDirectory(prefix="veil-preview-") as scratch:
        plain = Path(scratch) / f"plain{suffix}"
        with console.status("decrypting for previews…"), plain.open("wb") as handle:
            decrypt_to(torrent, vault.ciphertext_path(content_id), ring, handle)
        with console.status("making previews…"):
            return tuple(store_previews(make_previews(plain, mime or None), store))


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
    torrent = vault.torrent(cid)
    manifest = torrent.manifest
    ring = vault.keyring(cid)
    meta = manifest.metadata(ring.metadata_key) if ring.metadata_key else None
    mime = meta.mime_type if meta else ""
    previews = () if no_previews else _previews_for(vault, cid, source, mime)
    card = card_for_content(
        content_id=cid,
        magnet=torrent.magnet,
        price_per_slice_wei=manifest.terms.price_per_slice_wei,
        seeder_share_bps=manifest.terms.seeder_share_bps,
        duration_s=meta.duration_s if meta else None,
        mime=mime,
        title=title,
        description=description,
        tags=tuple(tag),
        size_bytes=meta.size if meta else None,
        previews=previews,
        blob_servers=tuple(blob_server),
        slice_count=torrent.piece_count,
    )
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


def _ether(wei: int) -> str:
    return format_ether(wei).removesuffix(" ETH")


def _card_document(row: CardRow, full: kinds.ContentCard | None = None) -> dict[str, Any]:
    """What a script needs of a card; amounts in wei as decimal strings (they exceed a double)."""
    card = full or row.card
    price = card.price_per_slice_wei
    total = price * card.slice_count if card.slice_count is not None else None
    servers = list(card.blob_servers)
    return {
        "id": row.id,
        "pubkey": row.pubkey,
        "author_name": row.author_name,
        "created_at": row.created_at,
        "title": card.title,
        "description": card.description,
        "tags": list(card.tags),
        "mime": card.mime,
        "duration_s": card.duration_s,
        "size_bytes": card.size_bytes,
        "slice_count": card.slice_count,
        "content_id": card.content_id,
        "magnet": card.magnet,
        "price_per_slice_wei": str(price),
        "price_per_slice_eth": _ether(price),
        "total_wei": None if total is None else str(total),
        "total_eth": None if total is None else _ether(total),
        "seeder_share_bps": card.seeder_share_bps,
        "seeder_part_per_slice_wei": str(price * card.seeder_share_bps // 10_000),
        "previews": [
            {**preview.__dict__, "urls": [f"{server.rstrip('/')}/{preview.sha256}" for server in servers]}
            for preview in card.previews
        ],
        "blob_servers": servers,
        "counts": {"reactions": row.reactions, "comments": row.comments, "reposts": row.reposts, "views": row.views},
        "chain_status": row.chain_status,
    }


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
            documents = []
            for row in rows:
                event = index.event(row.id)
                documents.append(_card_document(row, kinds.ContentCard.from_event(event) if event else None))
            _print_json({"cards": documents})
            return
    if nobody:
        return
    if not rows:
        console.print(Text("no cards" + (f" match {shown(search)!r}" if search else "")))
    elif long:
        _print_long(rows)
    else:
        console.print(_feed_table(rows))


def _name_of(index: FeedIndex, pubkey: str) -> str:
    profile = index.profile(pubkey)
    return profile["name"] if profile else ""


def _card_details(index: FeedIndex, card_id: str) -> dict[str, Any]:
    row = index.card(card_id)
    if row is None:
        raise SocialError(f"no card {card_id[:16]}… in the local index")
    event = index.event(row.id)
    document = _card_document(row, kinds.ContentCard.from_event(event) if event else None)
    document["comments"] = [
        {
            "id": c.id, "parent_id": c.parent_id, "pubkey": c.pubkey, "author_name": _name_of(index, c.pubkey),
            "created_at": c.created_at, "text": c.content,
        }
        for c in index.comments(row.id)
    ]
    return document


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
        document = _card_details(index, found)
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
        target = await find_event(pool, index, card_id)
        return await publish(pool, index, kinds.build_reaction(identity, kinds.EventRef.of(target), emoji))

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
        root = await find_event(pool, index, card_id)
        parent = await find_event(pool, index, reply_to) if reply_to else None
        event = kinds.build_comment(
            identity, kinds.EventRef.of(root), text, kinds.EventRef.of(parent) if parent else None
        )
        return await publish(pool, index, event)

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
        target = await find_event(pool, index, card_id)
        return await publish(pool, index, kinds.build_repost(identity, target, pool.urls[0]))

    outcomes = _session(vault.home, relay, work)
    console.print("[green]✓[/] reposted")
    _report(outcomes)


def _pubkey_hex(text: str) -> str:
    value = text.strip()
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()):
        return value.lower()
    if value.startswith("npub1"):
        import nostr_sdk

        try:
            return nostr_sdk.PublicKey.parse(value).to_hex()
        except Exception:  # nostr_sdk raises its own error types for bad bech32
            pass
    raise SocialError(f"{text!r} is not a Nostr public key (64 hex digits or npub1…)")


def follow(
    pubkeys: list[str] = typer.Argument(..., help="Public keys (hex or npub) to follow."),
    unfollow: bool = typer.Option(False, "--unfollow", help="Stop following them instead."),
    relay: list[str] = _relay_option(),
) -> None:
    """Follow (or unfollow) people: publishes your whole follow list (NIP-02)."""
    wanted = [_pubkey_hex(p) for p in pubkeys]
    vault, identity = unlock_identity()
    me = identity.nostr_pubkey

    async def work(pool: RelayPool, index: FeedIndex) -> tuple[list[PublishOutcome], int]:
        # Catch up with our own list first: it may have been changed from another device.
        events, _ = await pool.fetch([{"kinds": [kinds.FOLLOW_LIST], "authors": [me]}])
        index.ingest_many(events)
        current = index.following(me)
        updated = [p for p in current if p not in wanted] if unfollow else list(dict.fromkeys([*current, *wanted]))
        outcomes = await publish(pool, index, kinds.build_follow_list(identity, updated))
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
            events, _ = await pool.fetch([{"kinds": [kinds.PROFILE], "authors": [me]}])
            index.ingest_many(events)
            old = index.profile(me) or {}
            event = kinds.build_profile(
                identity,
                name=name if name is not None else old.get("name", ""),
                about=about if about is not None else old.get("about", ""),
                picture=picture if picture is not None else old.get("picture", ""),
                wallet=identity.wallet,
            )
            outcomes = await publish(pool, index, event)
            relay_list = kinds.build_relay_list(identity, [kinds.RelayListEntry(url) for url in pool.urls])
            await pool.publish(relay_list)  # NIP-65: where to find us; best effort
            index.ingest(relay_list)
            return outcomes

        outcomes = _session(vault.home, relay, update)
        console.print("[green]✓[/] profile updated")
        _report(outcomes)
        target = me
    else:
        vault = open_vault()
        target = _pubkey_hex(pubkey) if pubkey else vault.public_identity()["nostr_pubkey"]

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
