"""`veil post`, `feed`, `react`, `comment`, `repost`, `follow`, `profile`: the social feed.

Relays: `--relay URL` (repeatable) on every command; else the list in
`$VEIL_HOME/social/relays.json` (`{"relays": ["wss://…"]}`); else the embedded relay on
127.0.0.1:7447 (`VEIL_RELAY_PORT` overrides), started for the command if no node runs it.
The local index lives in `$VEIL_HOME/social/`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table

from veilstream.node.cli.common import console, open_vault, unlock_identity
from veilstream.social import kinds
from veilstream.social.blobs import BlobStore
from veilstream.social.embedded_relay import DEFAULT_PORT, EmbeddedRelay
from veilstream.social.errors import SocialError
from veilstream.social.events import Event
from veilstream.social.index import CardRow, FeedIndex
from veilstream.social.relay_client import PublishOutcome, RelayPool, check_relay_url
from veilstream.social.sync import publish, sync

T = TypeVar("T")

RELAY_OPTION_HELP = "Relay URL (repeatable); default: the configured list, else the embedded relay."


def _relay_option() -> list[str]:
    return typer.Option([], "--relay", help=RELAY_OPTION_HELP, show_default=False)


def social_home(home: Path) -> Path:
    return home / "social"


def configured_relays(home: Path) -> list[str]:
    path = social_home(home) / "relays.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        relays = data["relays"] if isinstance(data, dict) else data
        return [check_relay_url(str(url)) for url in relays]
    except (ValueError, KeyError, TypeError) as exc:
        raise SocialError(f"{path} is not a relay list ({{\"relays\": [\"wss://…\"]}}): {exc}") from None


def _embedded_port() -> int:
    value = os.environ.get("VEIL_RELAY_PORT")
    return int(value) if value and value.isdigit() else DEFAULT_PORT


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def resolve_relays(home: Path, cli_relays: list[str], stack: ExitStack) -> list[str]:
    """The relays for this command; starts the embedded relay when it is the default and down."""
    if cli_relays:
        return [check_relay_url(url) for url in cli_relays]
    configured = configured_relays(home)
    if configured:
        return configured
    port = _embedded_port()
    if not _listening(port):
        try:
            relay = stack.enter_context(EmbeddedRelay(social_home(home) / "relay", port=port))
            return [relay.url]
        except SocialError:
            if not _listening(port):  # another command may have started it meanwhile
                raise
    return [f"ws://127.0.0.1:{port}"]


def _run(coroutine: Awaitable[T]) -> T:
    return asyncio.run(coroutine)


def _open_index(home: Path) -> FeedIndex:
    return FeedIndex(social_home(home) / "index.sqlite3")


def _log_to_file(home: Path) -> Path:
    """Refusals and relay trouble go to `social/social.log`, not over the command's output."""
    path = social_home(home) / "social.log"
    logger = logging.getLogger("veilstream.social")
    if not any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers):
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return path


def _with_pool(home: Path, relays: list[str], work: Callable[[RelayPool, FeedIndex], Awaitable[T]]) -> T:
    _log_to_file(home)
    with ExitStack() as stack:
        urls = resolve_relays(home, relays, stack)
        index = stack.enter_context(_open_index(home))

        async def go() -> T:
            async with RelayPool(urls) as pool:
                return await work(pool, index)

        return _run(go())


def _report(outcomes: list[PublishOutcome]) -> None:
    for outcome in outcomes:
        mark = "[green]✓[/]" if outcome.accepted else "[red]✗[/]"
        detail = f" ({outcome.message})" if outcome.message else ""
        console.print(f"  {mark} {outcome.relay}{detail}")


async def _find_event(pool: RelayPool, index: FeedIndex, id_or_prefix: str) -> Event:
    """A card (or any event) by id, from the index, else from the relays (then indexed)."""
    text = id_or_prefix.strip().lower()
    if len(text) < 64:
        row = index.card(text)
        if row is None:
            raise SocialError(f"no card starting {text!r} in the local index: run `veil feed` first, or give the full id")
        text = row.id
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise SocialError(f"{id_or_prefix!r} is not an event id (64 hex digits)")
    event = index.event(text)
    if event is None:
        events, _ = await pool.fetch([{"ids": [text]}])
        for raw in events:
            if index.ingest(raw).reason in ("stored", "duplicate"):
                event = index.event(text)
    if event is None:
        raise SocialError(f"event {text[:16]}… is on none of the relays")
    return event


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
) -> kinds.ContentCard:
    """The card for a content, from explicit fields: the seam between the content layer and the feed."""
    return kinds.ContentCard(
        content_id=content_id, title=title, description=description, tags=tags, mime=mime,
        duration_s=duration_s, magnet=magnet, price_per_slice_wei=price_per_slice_wei,
        seeder_share_bps=seeder_share_bps, size_bytes=size_bytes, previews=previews, blob_servers=blob_servers,
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
    )
    event = kinds.build_card(identity, card, pow_bits=pow_bits)
    outcomes = _with_pool(vault.home, relay, lambda pool, index: publish(pool, index, event))
    console.print(f"[green]✓[/] card [bold]{event.id}[/] for {cid[:16]}… ({len(previews)} preview{'' if len(previews) == 1 else 's'})")
    _report(outcomes)


# --- feed -------------------------------------------------------------------------------------


def _count(value: int) -> str:
    return f"{value:,}" if value else "[dim]0[/]"


def _feed_table(rows: list[CardRow]) -> Table:
    table = Table("card", "title", "by", "reactions", "comments", "reposts", "views")
    for row in rows:
        chain = " [green]⛓[/]" if row.chain_status else ""
        author = row.author_name or row.pubkey[:12] + "…"
        table.add_row(
            row.id[:12], f"[bold]{row.card.title}[/]{chain}", author, _count(row.reactions), _count(row.comments),
            _count(row.reposts), _count(row.views),
        )
    return table


def feed(
    search: str | None = typer.Option(None, "--search", help="Words that must all appear (word* for a prefix)."),
    following: bool = typer.Option(False, "--following", help="Only cards by people you follow."),
    top: bool = typer.Option(False, "--top", help="Most engaged first, instead of newest first."),
    limit: int = typer.Option(30, "--limit", min=1, max=500, help="How many cards."),
    offline: bool = typer.Option(False, "--offline", help="Show the local index without asking relays."),
    relay: list[str] = _relay_option(),
) -> None:
    """Catch up from the relays and show the feed: titles with reaction, comment and view counts."""
    vault = open_vault()
    me = vault.public_identity().get("nostr_pubkey")
    if not offline:
        report = _with_pool(vault.home, relay, lambda pool, index: sync(pool, index, me=me))
        if report.refused:
            log_path = social_home(vault.home) / "social.log"
            console.print(f"[yellow]{report.refused} events refused[/] (reasons in {log_path})")
    with _open_index(vault.home) as index:
        authors = index.following(me) if following and me else None
        if following and not authors:
            console.print("you follow no one yet: `veil follow PUBKEY`")
            return
        rows = index.feed(search=search, authors=authors, order="top" if top else "time", limit=limit)
    if not rows:
        console.print("no cards" + (f" match {search!r}" if search else ""))
        return
    console.print(_feed_table(rows))


# --- react, comment, repost, follow, profile --------------------------------------------------


def react(
    card_id: str = typer.Argument(..., help="Card id, or a unique prefix of 8+ hex digits."),
    emoji: str = typer.Option("+", "--emoji", help="'+' (like), '-' (dislike) or an emoji."),
    relay: list[str] = _relay_option(),
) -> None:
    """React to a card (NIP-25)."""
    vault, identity = unlock_identity()

    async def work(pool: RelayPool, index: FeedIndex) -> list[PublishOutcome]:
        target = await _find_event(pool, index, card_id)
        return await publish(pool, index, kinds.build_reaction(identity, kinds.EventRef.of(target), emoji))

    outcomes = _with_pool(vault.home, relay, work)
    console.print(f"[green]✓[/] reacted {emoji}")
    _report(outcomes)


def comment(
    card_id: str = typer.Argument(..., help="Card id, or a unique prefix of 8+ hex digits."),
    text: str = typer.Argument(..., help="The comment."),
    reply_to: str | None = typer.Option(None, "--reply-to", help="Id of the comment this answers."),
    relay: list[str] = _relay_option(),
) -> None:
    """Comment on a card, or reply to a comment on it (NIP-22)."""
    vault, identity = unlock_identity()

    async def work(pool: RelayPool, index: FeedIndex) -> list[PublishOutcome]:
        root = await _find_event(pool, index, card_id)
        parent = await _find_event(pool, index, reply_to) if reply_to else None
        event = kinds.build_comment(
            identity, kinds.EventRef.of(root), text, kinds.EventRef.of(parent) if parent else None
        )
        return await publish(pool, index, event)

    outcomes = _with_pool(vault.home, relay, work)
    console.print("[green]✓[/] commented")
    _report(outcomes)


def repost(
    card_id: str = typer.Argument(..., help="Card id, or a unique prefix of 8+ hex digits."),
    relay: list[str] = _relay_option(),
) -> None:
    """Repost a card to your followers (NIP-18)."""
    vault, identity = unlock_identity()

    async def work(pool: RelayPool, index: FeedIndex) -> list[PublishOutcome]:
        target = await _find_event(pool, index, card_id)
        return await publish(pool, index, kinds.build_repost(identity, target, pool.urls[0]))

    outcomes = _with_pool(vault.home, relay, work)
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

    outcomes, count = _with_pool(vault.home, relay, work)
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

        outcomes = _with_pool(vault.home, relay, update)
        console.print("[green]✓[/] profile updated")
        _report(outcomes)
        target = me
    else:
        vault = open_vault()
        target = _pubkey_hex(pubkey) if pubkey else vault.public_identity()["nostr_pubkey"]

        async def fetch(pool: RelayPool, index: FeedIndex) -> None:
            events, _ = await pool.fetch([{"kinds": [kinds.PROFILE, kinds.RELAY_LIST], "authors": [target]}])
            index.ingest_many(events)

        _with_pool(vault.home, relay, fetch)
    with _open_index(vault.home) as index:
        shown = index.profile(target)
        relays = index.relay_list(target)
    table = Table(show_header=False, box=None)
    table.add_row("nostr key", target)
    if shown is None:
        table.add_row("profile", "[dim]none published[/]")
    else:
        table.add_row("name", shown["name"] or "[dim]—[/]")
        table.add_row("about", shown["about"] or "[dim]—[/]")
        if shown["picture"]:
            table.add_row("picture", shown["picture"])
        wallet = shown["wallet_address"]
        if wallet:
            mark = "[green]✓ signed by the wallet[/]" if shown["wallet_verified"] else "[red]✗ binding does not verify[/]"
            table.add_row("wallet", f"{wallet}  {mark}")
    if relays:
        table.add_row("relays", ", ".join(r.url for r in relays))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("post")(post)
    app.command("feed")(feed)
    app.command("react")(react)
    app.command("comment")(comment)
    app.command("repost")(repost)
    app.command("follow")(follow)
    app.command("profile")(profile)
