"""Remove the worktrees of ended batches that are merged, discarded or past the retention period."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from spawner.core.words import plural
from spawner.engine import housekeeping


def size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


class Command(BaseCommand):
    help = (
        "Remove worktrees of ended batches whose work is merged or discarded, or that ended longer ago than "
        "SPAWNER_WORKTREE_RETENTION_HOURS; prune git's records of them. Past the retention, run branches "
        "whose work is merged or discarded are deleted too (each printed with its last commit); other "
        "branches stay. Running batches are left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=float,
            metavar="HOURS",
            help=f"retention in hours (default SPAWNER_WORKTREE_RETENTION_HOURS, "
            f"{settings.SPAWNER['WORKTREE_RETENTION_HOURS']:g}); 0 removes every worktree of an ended batch",
        )
        parser.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
        parser.add_argument("--limit", type=int, help="remove at most this many worktrees")

    def handle(self, *args, **opts):
        hours = opts["older_than"]
        if hours is not None and hours < 0:
            raise CommandError("--older-than must be 0 or more hours")
        older_than = timedelta(hours=hours) if hours is not None else None
        report = housekeeping.collect(older_than=older_than, dry_run=opts["dry_run"], limit=opts["limit"])
        verb = "would remove" if report.dry_run else "removed"
        for r in report.removed:
            if r.attempt is not None:
                what = f"batch {r.batch_id} run {r.key} attempt {r.attempt}"
            else:
                what = f"batch {r.batch_id} {r.key}".rstrip()
            self.stdout.write(f"{verb} {r.path}  ({what}, {r.reason}, {size(r.bytes)})")
        gone = "would delete" if report.dry_run else "deleted"
        for b in report.branches:
            self.stdout.write(f"{gone} branch {b.branch} (was {b.commit[:12]}, {b.reason}) in {b.repo}")
        self.stdout.write(
            f"{verb} {plural(len(report.removed), 'worktree')}, {'would free' if report.dry_run else 'freed'} "
            f"{size(report.freed)}; {report.kept} kept (work not merged yet, within retention); "
            f"{gone} {plural(len(report.branches), 'branch', 'branches')}"
        )
