"""The audit log: hash-chained, durable, tamper-evident, and torn writes are dropped."""

import json

import pytest

from veilstream.market.audit import GENESIS, PAID_BY_CHEQUES, PAID_BY_GRANT, AuditLog, AuditLogError


def fill(path, n=5):
    log = AuditLog(path)
    heads = [log.append("0xViewer", "ab" * 32, i, i + 1, (i + 1) * 10) for i in range(n)]
    log.close()
    return heads


def test_reopening_restores_the_head(tmp_path):
    heads = fill(tmp_path / "audit.log")
    log = AuditLog(tmp_path / "audit.log")
    assert log.head == heads[-1] and log.count == 5
    assert len(set(heads)) == 5 and GENESIS not in heads


@pytest.mark.parametrize("field,value", [("first", 99), ("paid_wei", 1), ("viewer", "0xOther"), ("paid_by", "grant")])
def test_an_edited_entry_breaks_the_chain(tmp_path, field, value):
    path = tmp_path / "audit.log"
    fill(path)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[2])
    entry[field] = value
    lines[2] = json.dumps(entry, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditLogError, match="entry 2"):
        AuditLog(path)


def test_a_deleted_entry_breaks_the_chain(tmp_path):
    path = tmp_path / "audit.log"
    fill(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    with pytest.raises(AuditLogError):
        AuditLog(path)


def test_a_torn_last_line_is_dropped_and_appending_continues(tmp_path):
    path = tmp_path / "audit.log"
    heads = fill(path, 3)
    with open(path, "ab") as f:
        f.write(b'{"seq": 3, "viewer": "0xVie')  # a crash mid-append: never acknowledged
    log = AuditLog(path)
    assert log.count == 3 and log.head == heads[-1]
    log.append("0xViewer", "ab" * 32, 3, 4, 40)
    log.close()
    assert AuditLog(path).count == 4


def test_releases_are_read_back_by_viewer_and_content(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    log.append("0xA", "c1", 0, 4, 40)
    log.append("0xB", "c1", 0, 2, 20)
    log.append("0xA", "c1", 4, 6, 60, PAID_BY_GRANT)
    log.close()
    again = AuditLog(tmp_path / "audit.log")
    assert [(r.first, r.end, r.paid_by) for r in again.releases_to("0xA", "c1")] == [(0, 4, PAID_BY_CHEQUES), (4, 6, PAID_BY_GRANT)]
    assert again.releases_to("0xA", "c2") == []


def test_a_full_disk_keeps_no_half_entry_and_the_log_goes_on(small_disk):
    log = AuditLog(small_disk.path / "audit.log")
    log.append("0xviewer", "ab" * 32, 0, 4, 100)
    head, count = log.head, log.count
    small_disk.fill()
    with pytest.raises(AuditLogError, match="cannot be written .* no key is released without its entry"):
        for n in range(10_000):  # the page cache may take a few before the disk says no
            log.append("0xviewer", "ab" * 32, 4 + n, 5 + n, 100)
    kept = log.count
    small_disk.free()
    log.append("0xviewer", "ab" * 32, 0, 1, 100)
    log.close()
    reopened = AuditLog(small_disk.path / "audit.log")  # the chain of hashes is whole: no torn line
    assert reopened.count == kept + 1 and reopened.count > count and reopened.head != head
