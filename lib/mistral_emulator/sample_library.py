"""make-sample-library: a realistic sample transcript library and its database in the library's existing
schema (user_version 12, WAL, the updated_at trigger), for the demo and the tests.

Names and folders follow the real library's patterns (en dashes, full-width punctuation, a folder name
with a trailing space); some files are not text, one is too big, one is missing, one is Windows-1252.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path

import click

from . import __version__
from .cli import one_line_errors
from .model import VOCABULARY

# The library's own schema, as its scanner creates it (version 12). objbatch must work with it as it is.
LIBRARY_SCHEMA_V12 = """
PRAGMA journal_mode = WAL;
CREATE TABLE files (
    file_path TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    filename TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    file_type TEXT,
    last_modified REAL,
    metadata_json TEXT,
    is_deleted INTEGER DEFAULT 0,
    ai_metadata_status TEXT DEFAULT 'pending',
    ai_confidence_score REAL,
    error_message TEXT,
    upload_status TEXT DEFAULT 'pending',
    remote_file_id TEXT,
    created_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')),
    updated_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now'))
);
CREATE INDEX idx_files_status ON files(ai_metadata_status);
CREATE TRIGGER files_updated_at AFTER UPDATE ON files FOR EACH ROW WHEN NEW.updated_at = OLD.updated_at
BEGIN
    UPDATE files SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') WHERE file_path = NEW.file_path;
END;
CREATE TABLE upload_log (id INTEGER PRIMARY KEY AUTOINCREMENT, file_path TEXT, uploaded_at TEXT, status TEXT);
PRAGMA user_version = 12;
"""

COURSES = ["Introduction to Objectivism", "Objectivist Epistemology", "The Art of Thinking", "Ethics of Egoism",
           "Principles of Grammar", "History of Philosophy"]
SUBJECTS = ["The Nature of Concepts", "Free Will and Determinism", "Rights and Government", "Emotions as Estimates",
            "The Virtue of Honesty", "Art and Sense of Life", "Causality and Identity", "Induction in Physics",
            "Capitalism and Justice", "Altruism versus Egoism", "Reason and Faith", "The Primacy of Existence",
            "Independence and Integrity", "Pragmatism Today", "Values and Happiness", "Mysticism in Culture",
            "Collectivism and the State", "Productiveness as a Virtue", "Logic and Certainty", "Benevolence"]
SENTENCES = [
    "The argument begins from the observation that {a} cannot be separated from {b}.",
    "A common objection holds that {a} is merely subjective, but this misreads the role of {b}.",
    "In answering a question from the audience, the speaker connects {a} with {b} and with everyday choices.",
    "Historically, thinkers treated {a} as a matter of convention; here it is grounded in {b}.",
    "The lecture returns several times to {a}, showing how it depends on {b}.",
    "One example concerns a businessman whose {a} is tested by pressures to abandon {b}.",
    "The point is that {a} is an achievement, not a given, and that {b} is its precondition.",
]


def transcript(rng: random.Random, subject: str, paragraphs: int) -> str:
    words = [w.replace("_", " ") for w in VOCABULARY]
    focus = rng.sample(words, 4)
    out = [f"{subject}.", ""]
    for _ in range(paragraphs):
        sentences = [rng.choice(SENTENCES).format(a=rng.choice(focus), b=rng.choice(focus if rng.random() < 0.7
                                                                                       else words))
                     for _ in range(rng.randint(4, 8))]
        out.append(" ".join(sentences))
        out.append("")
    return "\n".join(out)


def layout(rng: random.Random, count: int, small: bool = False) -> list[tuple[str, dict, int]]:
    """(relative path, scanner metadata, paragraphs) for `count` text files in the real patterns; `small`
    files have a few paragraphs (about 1 KB) instead of 12-40 (about 14 KB)."""
    items = []
    for i in range(count):
        subject = SUBJECTS[i % len(SUBJECTS)]
        kind = i % 11
        paragraphs = 2 if i % 23 == 5 else rng.randint(1, 3) if small else rng.randint(12, 40)
        if kind in (0, 1, 2, 3):
            course = COURSES[i % len(COURSES)]
            lesson = i // 6 + 1
            name = f"{course} - Lesson {lesson:02d} - {subject}.txt"
            items.append((f"Courses/{course}/{name}",
                          {"course": course, "lesson_number": str(lesson), "topic": subject}, paragraphs))
        elif kind == 4:
            year, quarter, week = i % 3 + 1, i % 4 + 1, i % 10 + 1
            name = (f"Objectivism Seminar - Foundations - Year {year} - Q{quarter} - Week {week} - {subject}.txt")
            items.append((f"Objectivism Seminar - Foundations/Year{year}/Q{quarter}/{name}",
                          {"series": "Objectivism Seminar", "year": str(year), "topic": subject}, paragraphs))
        elif kind in (5, 6, 7):
            date = f"20{10 + i % 12:02d}-{i % 12 + 1:02d}-{i % 27 + 1:02d}"
            slug = subject.replace(" ", "-")
            items.append((f"MOTM/MOTM_{date}_{slug}.txt", {"series": "MOTM", "date": date, "topic": subject},
                          paragraphs))
        elif kind in (8, 9):
            episode = 100 + i
            name = f"Episode {episode} [{1_500_000_000_000 + i * 7919}].txt"
            items.append((f"Peikoff Podcast/{name}", {"series": "Peikoff Podcast", "episode": str(episode)},
                          paragraphs))
        else:
            name = f"{subject}： Q＆A ｜ Session {i}.txt" if i % 2 else f"OCON {2010 + i % 12} – {subject}.txt"
            items.append((f"OCON {2010 + i % 12} /{name}", {"series": "OCON", "topic": subject}, paragraphs))
    return items


def build(root: Path, db: Path, count: int, seed: int, small: bool = False) -> dict:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows, made = [], {"text": 0, "not_text": 0, "too_big": 0, "missing": 0}
    seen: set[str] = set()
    for i, (rel, scanner, paragraphs) in enumerate(layout(rng, count, small)):
        if rel in seen:  # large samples repeat name patterns: number the repeats like the library does
            rel = rel.replace(".txt", f" (part {i}).txt")
        seen.add(rel)
        subject = scanner.get("topic") or rel.rsplit("/", 1)[-1]
        rows.append(_write(root / rel, transcript(rng, subject, paragraphs).encode("utf-8"), scanner))
        made["text"] += 1
    cp1252 = ("Books/Ayn Rand - The Romantic Manifesto (1969).txt",
              transcript(rng, "The Romantic Manifesto – art, café culture and sense of life", 20).encode("cp1252"))
    rows.append(_write(root / cp1252[0], cp1252[1], {"author": "Ayn Rand", "title": "The Romantic Manifesto"}))
    made["text"] += 1
    for suffix in (".pdf", ".pdf", ".html", ".epub", ".docx"):
        rows.append(_write(root / f"Books/Essays{made['not_text']}{suffix}", b"%PDF-1.4 binary\x00\x01", {}))
        made["not_text"] += 1
    big = transcript(rng, "A Very Long Book", 10) * 160
    rows.append(_write(root / "Books/Leonard Peikoff - Complete Lectures (1991).txt", big.encode("utf-8"), {}))
    made["too_big"] += 1
    gone = root / "Thinking Lab/Thinking Lab - Session 07 - Lost Recording.txt"
    rows.append({**_row(gone, b"lost", {"series": "Thinking Lab"})})
    made["missing"] += 1
    _create_db(db, rows)
    return made


def _write(path: Path, data: bytes, scanner: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return _row(path, data, scanner)


def _row(path: Path, data: bytes, scanner: dict) -> dict:
    return {"file_path": str(path.resolve()), "content_hash": hashlib.sha256(data).hexdigest(),
            "filename": path.name, "file_size": len(data), "file_type": path.suffix.lstrip(".").lower(),
            "metadata_json": json.dumps(scanner, ensure_ascii=False)}


def _create_db(db: Path, rows: list[dict]) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        leftover.unlink(missing_ok=True)
    conn = sqlite3.connect(db)
    conn.executescript(LIBRARY_SCHEMA_V12)
    conn.executemany("INSERT INTO files (file_path, content_hash, filename, file_size, file_type, metadata_json) "
                     "VALUES (:file_path, :content_hash, :filename, :file_size, :file_type, :metadata_json)", rows)
    conn.commit()
    conn.close()


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Example:
  $ make-sample-library --root demo/library --db demo/library.db --count 300

\b
Environment: none read.

\b
Exit codes: 0 done, 1 --db or --root already exists (without --replace), 2 usage error.""")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Folder for the sample transcripts.")
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="Database to create.")
@click.option("--count", default=300, show_default=True,
              help="Number of transcripts; one Windows-1252 book is added (--count 3 makes 4 text files).")
@click.option("--seed", default=7, show_default=True, help="Seed: the same seed gives the same library.")
@click.option("--small", is_flag=True, help="Small transcripts (about 1 KB) instead of realistic ones (about 14 KB).")
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.option("--replace", is_flag=True, help="Overwrite an existing --db and the files in --root.")
@one_line_errors
def main(root: str, db: str, count: int, seed: int, small: bool, replace: bool) -> None:
    """Create a sample library of transcripts and its database in the library's existing schema."""
    for path, what in ((Path(db), "database"), (Path(root), "folder")):
        if not replace and path.exists() and (path.is_file() or any(path.iterdir())):
            raise click.ClickException(f"{what} {path} already exists (a real library's?); choose a new path, "
                                       "or add --replace to overwrite it")
    made = build(Path(root), Path(db), count, seed, small)
    click.echo(f"make-sample-library: {made['text']} text files, {made['not_text']} not text, {made['too_big']} too "
               f"big, {made['missing']} missing, database {db}", err=True)
