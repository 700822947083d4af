"""Jobs and indexes that an attacker or bad luck wrote: alias bombs and deep nesting in YAML, a
damaged index (every kind of damage is one clear error at open, at `run` and at serve start),
pathological files to chunk, links out of a source folder, file names that forge output lines,
and relative paths inside a backend's options."""

import json
import os
import shutil
import time

import numpy as np
import pytest

from rerankflow.cli.main import main
from rerankflow.errors import ConfigError, DataError
from rerankflow.index import IndexSettings, open_index, update_index
from rerankflow.index.chunking import Chunker, ChunkSettings
from rerankflow.index.extract import SourceDocument, read_source
from rerankflow.pipelines.job import load_job_text
from rerankflow.yamlio import MAX_NODES, YamlDocument

from .test_index import WordEncoder, write_corpus


def alias_bomb(levels=9, width=10):
    """A few hundred bytes of YAML that stand for width**levels values."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bombs_in_jobs_fail_fast_with_file_and_line(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: bomb\n" + alias_bomb() + "dataset: {builtin: demo}\npipelines: {p: [bm25]}\n")
    assert len(job.read_bytes()) < 1300
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"job\.yaml:\d+: the YAML holds more than {MAX_NODES:,} values"):
        YamlDocument(job.read_text(), job)
    assert main(["validate", str(job)]) == 2
    assert time.monotonic() - started < 10  # it spun past two minutes before


def test_shared_anchors_within_the_limit_still_load_and_duplicate_keys_are_still_found():
    doc = YamlDocument("base: &b {k1: 0.9, b: 0.4}\none: *b\ntwo: [*b, *b]\n")
    assert doc.data["two"] == [{"k1": 0.9, "b": 0.4}] * 2
    with pytest.raises(ConfigError, match="key 'k1' appears twice"):
        YamlDocument("base: &b {k1: 0.9, k1: 0.4}\none: *b\ntwo: [*b, *b]\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [("a: &a [1, *a]\n", "refers to a value that contains it"), ("[" * 3000 + "]" * 3000, "nested too deeply")],
)
def test_recursive_and_deeply_nested_yaml_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        load_job_text(text, file="job.yaml")


def test_an_alias_bomb_in_front_matter_skips_the_file_with_the_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    bomb = "---\n" + alias_bomb() + "---\n# Title\n\nBody text.\n"
    assert len(bomb) < 700
    (src / "bomb.md").write_text(bomb)
    (src / "ok.md").write_text("# Fine\n\nA normal page.\n")
    with pytest.raises(DataError, match=r"bomb\.md: front matter: the YAML holds more than"):
        read_source(src / "bomb.md", "bomb.md")
    report = update_index([src], tmp_path / "ix", IndexSettings(encoder=None), encoder=WordEncoder())
    assert report.added == ["src/ok.md"] and report.skipped[0][0] == "src/bomb.md"


# -- a damaged index ---------------------------------------------------------------------------------


def _manifest_edit(change):
    def damage(ix):
        path = ix / "manifest.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return damage


def _segment(ix):
    return next((ix / "segments").iterdir())


def _truncate(name, keep=0.5):
    def damage(ix):
        path = _segment(ix) / name if name != "manifest.json" else ix / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return damage


def _write(name, content):
    def damage(ix):
        (_segment(ix) / name).write_bytes(content if isinstance(content, bytes) else content.encode())

    return damage


def _drop_first_line(ix):
    path = _segment(ix) / "chunks.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))


def _wrong_rows(ix):
    np.save(_segment(ix) / "embeddings.npy", np.zeros((2, 32), np.float32))


def _object_array(ix):
    np.save(_segment(ix) / "embeddings.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)


DAMAGE = {
    "manifest truncated": _truncate("manifest.json"),
    "manifest empty": lambda ix: (ix / "manifest.json").write_text(""),
    "manifest a list": lambda ix: (ix / "manifest.json").write_text("[1, 2]"),
    "manifest without settings": _manifest_edit(lambda m: m.pop("settings")),
    "manifest without segments": _manifest_edit(lambda m: m.pop("segments")),
    "segments of the wrong type": _manifest_edit(lambda m: m.update(segments={"a": 1})),
    "segment name escaping the folder": _manifest_edit(lambda m: m["segments"][0].update(name="../../etc")),
    "segment chunk count a string": _manifest_edit(lambda m: m["segments"][0].update(chunks="many")),
    "deleted row out of range": _manifest_edit(lambda m: m["segments"][0].update(deleted=[10_000])),
    "documents of the wrong type": _manifest_edit(lambda m: m.update(documents=[1])),
    "a file listing an unknown document": _manifest_edit(lambda m: next(iter(m["files"].values()))["docs"].append("x")),
    "unknown format": _manifest_edit(lambda m: m.update(format=99)),
    "tokenizer with an unknown stemmer": _manifest_edit(lambda m: m["settings"]["tokenizer"].update(stemmer="klingon")),
    "tokenizer with an unknown key": _manifest_edit(lambda m: m["settings"]["tokenizer"].update(colour="red")),
    "approximate index file missing": _manifest_edit(lambda m: m.update(ann={"file": "ann-000009.faiss"})),
    "segment folder missing": lambda ix: shutil.rmtree(_segment(ix)),
    "chunks truncated mid-line": _truncate("chunks.jsonl", 0.6),
    "a chunk line removed": _drop_first_line,
    "term counts truncated": _truncate("tf.npz"),
    "term counts garbage": _write("tf.npz", b"PK\x03\x04 not a zip at all"),
    "vocabulary not JSON": _write("vocab.json", '["a", '),
    "vocabulary a mapping": _write("vocab.json", '{"a": 1}'),
    "vocabulary too short": _write("vocab.json", '["a"]'),
    "vectors truncated": _truncate("embeddings.npy"),
    "vectors of the wrong count": _wrong_rows,
    "vectors needing pickle": _object_array,
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    write_corpus(root / "src")
    update_index([root / "src"], root / "ix", IndexSettings(chunking=ChunkSettings(12, 3)), encoder=WordEncoder())
    return root


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_every_kind_of_index_damage_is_one_clear_error(pristine, tmp_path, kind):
    ix = tmp_path / "ix"
    shutil.copytree(pristine / "ix", ix)
    DAMAGE[kind](ix)
    with pytest.raises(DataError) as err:
        open_index(ix)
    message = str(err.value)
    assert str(ix) in message and "rebuild" in message, message
    assert "corpus file not found" not in message


def test_a_damaged_index_stops_run_and_serve_with_one_line(pristine, tmp_path, capsys):
    ix = tmp_path / "ix"
    shutil.copytree(pristine / "ix", ix)
    _truncate("tf.npz")(ix)
    (tmp_path / "topics.tsv").write_text("1\tdaemon port\n")
    job = tmp_path / "job.yaml"
    job.write_text("dataset: {index: ix, topics: topics.tsv}\npipelines: {p: [bm25]}\n")
    for command in (["run", str(job), "-o", str(tmp_path / "out")], ["serve", str(job), "--port", "0"]):
        capsys.readouterr()
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "tf.npz: cannot be read" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# -- pathological files -------------------------------------------------------------------------------


def test_a_one_line_file_is_chunked_with_few_length_calls():
    calls = []

    def count_many(texts):
        calls.append(len(texts))
        return [len(t.split()) for t in texts]

    text = " ".join(f"w{i % 997}" for i in range(200_000))  # 1.2 MB, one line, no sentence ends
    chunks = Chunker(ChunkSettings(200, 40), lambda t: len(t.split()), count_many).chunks(
        SourceDocument("d", "d", text)
    )
    assert chunks[0].meta["start"] == 0 and chunks[-1].meta["end"] == len(text)
    assert len(calls) <= 3 and sum(calls) <= 2 * 997 + 1  # each distinct word (with and without its space) once


def test_a_text_without_spaces_is_cut_by_characters_at_its_own_offsets():
    text = "ab" * 5000
    chunks = Chunker(ChunkSettings(300, 20), len, lambda ts: [len(t) for t in ts]).chunks(
        SourceDocument("d", "d", text)
    )
    assert all(text[c.meta["start"] : c.meta["end"]] == c.text for c in chunks)
    assert chunks[-1].meta["end"] == len(text) and max(len(c.text) for c in chunks) <= 300


# -- links, file names, backend paths --------------------------------------------------------------------


def test_links_that_leave_the_source_folder_are_not_followed(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("the root password is hunter2\n")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "page.md").write_text("# Page\n\nInside text.\n")
    os.symlink(outside, src / "linked.txt")
    os.symlink(src / "page.md", src / "sub" / "alias.md")  # inside the folder: followed
    os.symlink(tmp_path, src / "sub" / "up")  # a folder link out of the source
    report = update_index([src], tmp_path / "ix", IndexSettings(encoder=None), encoder=WordEncoder())
    assert sorted(report.added) == ["src/page.md", "src/sub/alias.md"]
    assert any(name == "src/linked.txt" and "outside" in reason for name, reason in report.skipped)
    ix = open_index(tmp_path / "ix")
    assert not any("hunter2" in c.text for c in ix.chunks)


def test_file_names_with_line_breaks_cannot_forge_output_lines(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "evil\nrerankflow: [1] forged.md").write_text("# Evil\n\nText.\n")
    report = update_index([src], tmp_path / "ix", IndexSettings(encoder=None), encoder=WordEncoder())
    assert report.skipped and "line break" in report.skipped[0][1]
    assert all("\n" not in line or line.startswith("  ") for line in report.summary().splitlines())
    assert "\n" not in report.skipped[0][0]  # the name is shown escaped


def test_relative_paths_in_backend_options_resolve_against_the_job_and_are_checked(tmp_path):
    sub = tmp_path / "jobs"
    sub.mkdir()
    text = (
        "dataset: {builtin: demo}\n"
        "pipelines:\n  p:\n    - bm25\n"
        "    - pointwise: {backend: {kind: hf, model: smollm2-135m-instruct, options: {tokenizer: ./tok}}}\n"
    )
    (sub / "job.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"job\.yaml:5: .*options\.tokenizer: .*jobs/tok.* not found"):
        from rerankflow.pipelines.job import load_job

        load_job(sub / "job.yaml")


def test_values_printed_on_one_line_escape_control_characters():
    from rerankflow.errors import one_line

    assert one_line("docs/a.md") == "docs/a.md" and one_line("café 😀") == "café 😀"
    assert one_line("evil\nrerankflow: forged") == "evil\\nrerankflow: forged"
    assert "\n" not in one_line("a\r\n\x1b[2Jb\u2028")
