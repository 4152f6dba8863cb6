"""A command's folder (plumbing/guard.py, runs.refuse_to_replace): one command at a time (a second refused while the
first lives, a killed one's lock taken over: tests/test_run_state.py's kill -9, in a process of its own; the lock
taken again when its file went in between); a new run never
writes where a run's or a test's files are, or links named like them, dangling or not; a study's folder is no
run's or test's, and the other way round; a run removes only files it wrote, writes through no planted link, leaves
no folder it made when it fails; a folder that is a file or cannot be written is one error before any training."""
import contextlib
import fcntl
import os
import tempfile

import pytest

import evaluate
import train
from benchmarks import seeds
from conftest import assert_clean_error, copy_run, run_main, snapshot, state_of
from plumbing import guard

RUN_FILES = ["checkpoint.pt", "confusion_matrix.png", "learning_curves.png", "metrics.json",
             "misclassified.png", "run.json", "state.pt"]


def run(data, out, *flags):
    result = run_main(train.main, "--data-dir", data, "--out-dir", out, "--batch-size", "16", *flags)
    assert result.returncode == 0, result.stderr
    return result


def test_the_lock_is_taken_again_when_its_folder_was_replaced_in_between(tmp_path, monkeypatch):
    real_flock, calls = fcntl.flock, []

    def flock(fd, operation):  # its holder, leaving it empty, removed the folder between this open and this lock,
        if not calls:  # and another command made it anew
            os.rmdir(tmp_path / "out")
            os.mkdir(tmp_path / "out")
        calls.append(operation)
        return real_flock(fd, operation)
    monkeypatch.setattr(fcntl, "flock", flock)
    with guard.held(tmp_path / "out") as fd:  # not the removed folder's lock, which a third process would not see
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "out")) and len(calls) == 2


def test_a_folder_removed_between_its_making_and_its_lock_is_one_error(tmp_path, monkeypatch):
    real = tempfile.TemporaryFile

    def removed_first(*args, **kwargs):  # as a holder leaving it empty removes it, just after this one made it
        os.rmdir(tmp_path / "out")
        return real(*args, **kwargs)
    monkeypatch.setattr(tempfile, "TemporaryFile", removed_first)
    with pytest.raises(OSError, match="cannot write to .*out: No such file or directory"):
        with guard.held(tmp_path / "out"):
            pass


def test_nothing_done_to_the_files_in_a_folder_lets_a_second_command_in(tmp_path):
    """The lock is the folder's own: no file put in it or taken out frees it (the lock of another process:
    tests/test_run_state.py's kill -9)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "state.pt").write_text("a run's")
    with guard.held(tmp_path / "out"):
        os.remove(tmp_path / "out" / "state.pt")
        os.mkfifo(tmp_path / "out" / "planted")
        with pytest.raises(BlockingIOError, match="out is in use by another command"):
            with guard.held(tmp_path / "out"):
                pass


def test_evaluate_out_dir_waits_for_no_one_and_writes_nothing_into_a_folder_in_use(trained_run, fake_data, tmp_path):
    with guard.held(tmp_path / "busy"):  # as a train.py training there would
        result = run_main(evaluate.main, "--checkpoint", trained_run / "checkpoint.pt", "--data-dir", fake_data,
                          "--out-dir", tmp_path / "busy")
        assert_clean_error(result, "busy is in use by another command", f"lsof {tmp_path / 'busy'}")
        assert os.listdir(tmp_path / "busy") == []


def test_a_new_run_never_replaces_one_silently(fake_data, tmp_path, trained_run):
    before = snapshot(trained_run)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", trained_run, "--seed", "9")
    assert_clean_error(result, "already holds state.pt", f"python train.py --resume --out-dir={trained_run} "
                       f"--data-dir={fake_data}", "--overwrite")
    assert snapshot(trained_run) == before
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.pt").write_bytes(b"someone's weights, with no state")
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "old"),
                       "already holds checkpoint.pt")


@pytest.mark.parametrize("name", ["checkpoint.pt", "metrics.json"])
def test_a_dangling_link_named_like_a_runs_file_is_refused_as_the_file(name, fake_data, tmp_path, trained_run):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).symlink_to(tmp_path / "gone")  # points nowhere: exists() says False, it is there
    for command, flags in ((train.main, []), (evaluate.main, ["--checkpoint", trained_run / "checkpoint.pt"])):
        result = run_main(command, "--data-dir", fake_data, "--out-dir", tmp_path / "out", *flags)
        assert_clean_error(result, f"already holds {name}")
    assert os.listdir(tmp_path / "out") == [name] and not os.path.exists(tmp_path / "gone")


@pytest.mark.parametrize("tested", [True, False])
def test_evaluate_never_writes_into_a_runs_folder(tested, trained_run, fake_data, tmp_path):
    out = copy_run(trained_run, tmp_path / "run")
    if not tested:  # as if train.py had stopped before its test
        for name in ("metrics.json", "confusion_matrix.png", "misclassified.png"):
            os.remove(out / name)
    before = snapshot(out)
    result = run_main(evaluate.main, "--checkpoint", out / "checkpoint.pt", "--data-dir", fake_data, "--out-dir", out)
    assert_clean_error(result, f"{out} already holds state.pt", "not replaced", "another --out-dir")
    assert "Test accuracy" not in result.stdout  # refused before the test, not after
    assert snapshot(out) == before


def test_a_study_folder_is_no_run_or_test_folder_and_the_other_way_round(fake_data, tmp_path, trained_run):
    result = run_main(seeds.main, "--seeds", "1", "--epochs", "1", "--data-dir", fake_data, "--out-dir",
                      tmp_path / "study")
    assert result.returncode == 0, result.stderr
    before = sorted(os.listdir(tmp_path / "study")), (tmp_path / "study" / "study.json").read_bytes()
    for flags in ([], ["--overwrite"]):
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "study", *flags)
        assert_clean_error(result, "already holds study.json, study.png", "it is a study's")
    result = run_main(evaluate.main, "--checkpoint", tmp_path / "study" / "seed-1" / "checkpoint.pt", "--data-dir",
                      fake_data, "--out-dir", tmp_path / "study")
    assert_clean_error(result, "already holds study.json")
    assert (sorted(os.listdir(tmp_path / "study")), (tmp_path / "study" / "study.json").read_bytes()) == before
    before = snapshot(trained_run)
    result = run_main(seeds.main, "--seeds", "7", "--data-dir", fake_data, "--out-dir", trained_run)
    assert_clean_error(result, f"{trained_run} already holds", "folder of its own")
    assert snapshot(trained_run) == before and not os.path.exists(trained_run / "seed-7")


def test_a_run_removes_only_files_it_wrote(fake_data, tmp_path):
    (tmp_path / "resume-2024.pdf").write_text("a cv")
    (tmp_path / "resume-drafts").mkdir()
    (tmp_path / "metrics.json.old").write_text("mine")
    run(fake_data, tmp_path, "--epochs", "2")
    assert (tmp_path / "resume-2024.pdf").read_text() == "a cv" and (tmp_path / "resume-drafts").is_dir()
    assert sorted(os.listdir(tmp_path)) == sorted(RUN_FILES + ["metrics.json.old", "resume-2024.pdf", "resume-drafts"])


@pytest.mark.parametrize("link", ["state.pt.tmp", "run.json.tmp"])
def test_a_link_planted_in_the_folder_is_never_written_through(link, fake_data, tmp_path):
    (tmp_path / "precious.txt").write_text("mine")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / link).symlink_to(tmp_path / "precious.txt")
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "run", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "precious.txt").read_text() == "mine"


def test_a_failed_run_leaves_no_folder_it_made_and_an_empty_folder_is_not_as_it_was(fake_data, tmp_path,
                                                                                     monkeypatch):
    result = run_main(train.main, "--data-dir", tmp_path / "nothing", "--out-dir", tmp_path / "a" / "b" / "c")
    assert_clean_error(result, "Fashion-MNIST is not")
    assert os.listdir(tmp_path) == []  # not a, nor a/b
    (tmp_path / "empty").mkdir()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "empty", "--overwrite")
    assert "nothing to resume" in result.stderr and "as it was" not in result.stderr


def test_out_dir_that_is_a_file_is_a_clear_error_and_the_file_survives(fake_data, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert_clean_error(run_main(train.main, "--data-dir", fake_data, "--out-dir", notes),
                       "notes.txt: a file, not a folder")
    assert notes.read_text() == "mine"


def test_an_out_dir_past_the_systems_limits_is_one_error_and_leaves_no_folders(fake_data, tmp_path):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / ("a-long-name/" * 400))
    assert_clean_error(result, "cannot write to", "File name too long")
    assert os.listdir(tmp_path) == []  # not the ~20 folders it made before the path grew too long


def test_an_unwritable_out_dir_is_found_before_training(fake_data):
    result = run_main(train.main, "--data-dir", fake_data, "--out-dir", "/proc")
    assert_clean_error(result, "cannot write to /proc")
    assert "Train Epoch" not in result.stdout


def test_a_run_whose_folder_is_moved_stops_at_its_next_save_and_leaves_its_successor_alone(fake_data, tmp_path,
                                                                                         monkeypatch):
    """Outside the promise (README.md): a folder moved while a run works in it. The run stops at its next save, one
    error line; it writes nothing into a folder of the old name that another command has made and holds, nor removes
    it when it ends."""
    real, successor = train.train_one_epoch, contextlib.ExitStack()

    def and_the_folder_moved_meanwhile(*args, **kwargs):  # epoch 1 saved; in epoch 2 a user renames the folder,
        if not os.path.exists(tmp_path / "moved") and (tmp_path / "run" / "state.pt").exists():
            os.rename(tmp_path / "run", tmp_path / "moved")
            successor.enter_context(guard.held(tmp_path / "run"))  # and another command makes one of that name
        return real(*args, **kwargs)
    monkeypatch.setattr(train, "train_one_epoch", and_the_folder_moved_meanwhile)
    with successor:
        result = run_main(train.main, "--data-dir", fake_data, "--out-dir", tmp_path / "run", "--epochs", "3")
        assert_clean_error(result, f"{tmp_path / 'run'} was moved or removed while this command worked in it")
        assert os.listdir(tmp_path / "run") == []  # the successor's, still empty, still there
    assert len(state_of(tmp_path / "moved")["history"]) == 1  # the epoch saved before the move, intact
