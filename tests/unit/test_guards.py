"""What the farm says, and how it exits, when a user's setup cannot work.

The database (``db.engine.open_database``, ``ensure_schema``), output folders
(``tasks.outputs``), the worker's device and database checks at boot (``tasks.launcher``,
``tasks.boot``) and the command line's mapping of errors to exit codes (``producer.guards``).
No service is needed: PostgreSQL is only asked for on a port where nothing listens.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

import pytest
from sqlalchemy import text

from db.engine import ensure_schema, make_engine, migrate, open_database
from db.exceptions import (
    DatabaseError,
    DatabaseMissing,
    DatabaseNotWritable,
    DatabaseUnreachable,
    DatabaseUnusable,
    UnsupportedDatabase,
)
from producer import guards
from producer.catalog import CatalogError
from producer.export import ExportError
from producer.submit import BrokerUnavailable
from tasks import boot, outputs
from tasks.launcher import DeviceUnavailable, check_device, check_devices
from tasks.outputs import OutputNotWritable
from tasks.settings import Settings

SECRET = "s3cret-pw"


def sqlite_url(path) -> str:
    return f"sqlite:///{path}"


# --- the database URL -------------------------------------------------------------------


def test_a_mysql_url_is_refused_by_its_scheme_without_its_password():
    with pytest.raises(UnsupportedDatabase) as caught:
        open_database(f"mysql://farm:{SECRET}@db.example/farm")
    message = str(caught.value)
    assert "unsupported database URL scheme 'mysql' in FARM_DATABASE_URL/--database-url" in message
    assert "sqlite:///path/farm.db or postgresql://user@host/db" in message
    assert SECRET not in message


def test_a_postgres_driver_the_farm_lacks_is_named():
    with pytest.raises(UnsupportedDatabase, match="unsupported database driver 'psycopg2'"):
        open_database("postgresql+psycopg2://farm@db.example/farm")


@pytest.mark.parametrize("url", ["farm.db", f"post gres://farm:{SECRET}@db/farm", ""])
def test_a_malformed_url_is_refused_without_its_password(url):
    with pytest.raises(UnsupportedDatabase) as caught:
        open_database(url)
    message = str(caught.value)
    assert "is not a database URL" in message
    assert "FARM_DATABASE_URL/--database-url" in message
    assert SECRET not in message


def test_make_engine_still_creates_a_sqlite_folder_for_its_callers(tmp_path):
    engine = make_engine(sqlite_url(tmp_path / "new" / "farm.db"))
    engine.dispose()
    assert (tmp_path / "new").is_dir()


# --- SQLite -----------------------------------------------------------------------------


def test_a_missing_sqlite_file_is_not_created_nor_its_folders(tmp_path):
    path = tmp_path / "a" / "b" / "farm.db"
    with pytest.raises(DatabaseMissing) as caught:
        open_database(sqlite_url(path), create=False)
    assert str(caught.value) == (
        f"no farm database at {path}; `farm submit` or `farm run` creates it"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_missing_sqlite_file_next_to_us_is_not_created_either(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatabaseMissing, match=str(tmp_path / "farm.db")):
        open_database("sqlite:///farm.db")
    assert list(tmp_path.iterdir()) == []


def test_create_makes_the_folders_and_the_file_and_the_schema(tmp_path):
    path = tmp_path / "a" / "b" / "farm.db"
    engine = open_database(sqlite_url(path), create=True)
    ensure_schema(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM batches")).scalar() == 0
    engine.dispose()
    assert path.is_file()


def test_a_file_in_the_way_of_the_folder_is_named(tmp_path):
    (tmp_path / "blocker").write_text("not a folder")
    with pytest.raises(DatabaseNotWritable) as caught:
        open_database(sqlite_url(tmp_path / "blocker" / "sub" / "farm.db"), create=True)
    assert str(caught.value) == (
        f"cannot create the folder {tmp_path / 'blocker' / 'sub'} for the farm database: "
        f"{tmp_path / 'blocker'} is a file, not a folder"
    )


def test_a_folder_that_cannot_be_created_is_named(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", refuse)
    with pytest.raises(DatabaseNotWritable, match="cannot create the folder .*: no permission"):
        open_database(sqlite_url(tmp_path / "new" / "farm.db"), create=True)


def test_a_read_only_folder_is_named(tmp_path, monkeypatch):
    # As root every folder is writable to os.access; the check is what is under test.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(DatabaseNotWritable) as caught:
        open_database(sqlite_url(tmp_path / "farm.db"), create=True)
    assert f"no permission to write in {tmp_path}" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_given_as_the_database_is_named(tmp_path):
    with pytest.raises(DatabaseUnusable, match="is a folder, not a database file"):
        open_database(sqlite_url(tmp_path), create=True)


@pytest.mark.parametrize("content", [b"x", b"sku,description\n" * 100])
def test_a_file_that_is_not_sqlite_is_refused_and_left_as_it_was(tmp_path, content):
    path = tmp_path / "catalog.csv"
    path.write_bytes(content)
    with pytest.raises(DatabaseUnusable, match=f"{path} is not a SQLite database"):
        open_database(sqlite_url(path), create=True)
    assert path.read_bytes() == content


def test_an_older_schema_is_migrated_by_a_read_only_command(tmp_path):
    url = sqlite_url(tmp_path / "farm.db")
    engine = make_engine(url)
    migrate(engine, "0002")
    engine.dispose()
    sessions = guards.database(Settings(database_url=url), create=False)
    with sessions() as session:
        assert session.execute(text("SELECT count(*) FROM timers")).scalar() == 0


def test_a_schema_newer_than_this_version_is_refused(tmp_path):
    url = sqlite_url(tmp_path / "farm.db")
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(DatabaseUnusable) as caught:
        guards.database(Settings(database_url=url))
    assert "at schema revision 9999_future" in str(caught.value)
    assert "upgrade fashion-farm" in str(caught.value)


# --- PostgreSQL without a server --------------------------------------------------------


def test_an_unreachable_postgres_names_host_and_port_but_not_the_password():
    with pytest.raises(DatabaseUnreachable) as caught:
        open_database(f"postgresql://farm:{SECRET}@127.0.0.1:1/farm")
    message = str(caught.value)
    assert message.startswith("cannot reach PostgreSQL at 127.0.0.1:1: connection refused")
    assert SECRET not in message


# --- output folders ---------------------------------------------------------------------


def test_an_output_folder_is_created_and_left_empty(tmp_path):
    folder = tmp_path / "out" / "b1"
    assert guards.writable_folder(folder) == folder
    assert list(folder.iterdir()) == []


def test_a_file_in_the_way_of_an_output_folder_is_named(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputNotWritable) as caught:
        guards.writable_folder(tmp_path / "out" / "b1", "output folder")
    assert str(caught.value) == (
        f"cannot write output folder {tmp_path / 'out' / 'b1'}: "
        f"{tmp_path / 'out'} is a file, not a folder"
    )


def test_a_full_disk_shows_when_the_output_folder_is_checked(tmp_path, monkeypatch):
    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "fsync", full)
    with pytest.raises(OutputNotWritable, match="output folder .*: the disk is full"):
        guards.writable_folder(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # the probe is gone


def test_a_folder_without_permission_is_named(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputNotWritable) as caught:
        outputs.write_json(tmp_path / "b1" / "a.json", {"a": 1})
    assert str(caught.value) == (
        f"cannot write {tmp_path / 'b1' / 'a.json'}: permission denied in {tmp_path / 'b1'}"
    )


def test_a_write_that_fills_the_disk_leaves_nothing_and_stays_an_os_error(tmp_path, monkeypatch):
    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "fsync", full)
    target = tmp_path / "b1" / "export.csv"
    with pytest.raises(OSError) as caught:
        outputs.write_json(target, {"a": 1})
    assert isinstance(caught.value, OutputNotWritable)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.strerror == "No space left on device"  # what stages put in their message
    assert str(caught.value) == f"cannot write {target}: the disk is full"
    assert list((tmp_path / "b1").iterdir()) == []


def test_an_error_not_about_the_place_is_left_as_it_is(tmp_path, monkeypatch):
    def broken(_fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(outputs.os, "fsync", broken)
    with pytest.raises(OSError) as caught:
        outputs.write_json(tmp_path / "a.json", {})
    assert type(caught.value) is OSError


def test_a_folder_where_no_file_can_be_made_is_named_not_a_traceback(tmp_path, monkeypatch):
    def missing(*args, **kwargs):  # what mkstemp raises in /proc
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", missing)
    with pytest.raises(OutputNotWritable) as caught:
        guards.writable_folder(tmp_path, "export folder")
    assert str(caught.value) == (
        f"cannot write export folder {tmp_path}: no file can be made there "
        "(No such file or directory)"
    )
    assert guards.exit_code_of(caught.value) == guards.EXIT_OUTPUT


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_proc_as_an_output_folder_is_named():
    with pytest.raises(OutputNotWritable, match="^cannot write export folder /proc: no file"):
        guards.output_file("/proc/nope.xlsx", "export")


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_an_out_file_that_is_not_a_regular_file_is_refused_and_left_alone(tmp_path, kind):
    target = tmp_path / "kept.csv"
    target.write_text("kept")
    path = tmp_path / "out.csv"
    if kind == "symlink":
        path.symlink_to(target)
        named = "a symbolic link"
    else:
        os.mkfifo(path)
        named = "a FIFO (named pipe)"
    with pytest.raises(ExportError) as caught:
        guards.output_file(path, "export")
    assert str(caught.value).startswith(
        f"cannot write the export to {path}: it is {named}, not a regular file"
    )
    assert guards.exit_code_of(caught.value) == guards.EXIT_OUTPUT
    assert path.is_symlink() if kind == "symlink" else stat.S_ISFIFO(path.lstat().st_mode)
    assert target.read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.csv", "out.csv"]  # no probe


def test_an_out_file_that_is_missing_or_regular_passes(tmp_path):
    (tmp_path / "old.csv").write_text("old")
    assert guards.output_file(tmp_path / "new" / "b1.csv", "export") == tmp_path / "new" / "b1.csv"
    assert guards.output_file(tmp_path / "old.csv", "export") == tmp_path / "old.csv"
    assert (tmp_path / "old.csv").read_text() == "old"


# --- devices ----------------------------------------------------------------------------


def test_a_gpu_asked_for_on_a_machine_without_cuda_stops_the_launcher(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(DeviceUnavailable) as caught:
        check_devices("auto", ["0"], count=0)
    assert str(caught.value).startswith("GPU 0 asked for, but no CUDA device is visible")
    assert guards.exit_code_of(caught.value) == 1


def test_gpus_past_the_last_card_are_named():
    with pytest.raises(DeviceUnavailable, match="GPU 2,3 asked for .* shows 2 CUDA devices"):
        check_devices("auto", ["0", "2", "3"], count=2)
    check_devices("auto", ["0", "1"], count=2)


def test_the_launcher_leaves_the_check_to_processes_when_it_sees_other_cards(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    check_devices("auto", ["0"])  # each process sees its own card: no verdict here


def test_cuda_asked_for_without_gpus_is_checked_and_the_cpu_never_is():
    with pytest.raises(DeviceUnavailable, match=r"device 'cuda' \(FARM_DEVICE/--device\)"):
        check_devices("cuda", count=0)
    check_devices("cpu", count=0)
    check_devices("auto", count=0)


def test_a_worker_process_names_the_gpu_it_was_given():
    with pytest.raises(DeviceUnavailable, match="^GPU 3 asked for, but no CUDA device"):
        check_device("cuda", visible="3", count=0)
    with pytest.raises(DeviceUnavailable, match="sees only 1 CUDA devices"):
        check_device("cuda:1", count=1)
    check_device("cuda:0", count=1)


# --- a worker process at boot -----------------------------------------------------------


def boot_settings(tmp_path, **changes) -> Settings:
    url = sqlite_url(tmp_path / "farm.db")
    open_database(url, create=True).dispose()
    return Settings(database_url=url, **changes)


def test_boot_refuses_cuda_without_a_device(tmp_path, monkeypatch):
    monkeypatch.setattr("tasks.launcher._cuda_device_count", lambda: 0)
    with pytest.raises(DeviceUnavailable):
        boot.check_serviceable(boot_settings(tmp_path, device="cuda"))


def test_boot_leaves_the_device_to_a_benchmark_runtime_factory(tmp_path, monkeypatch):
    monkeypatch.setattr("tasks.launcher._cuda_device_count", lambda: 0)
    settings = boot_settings(tmp_path, device="cuda", runtime_factory="bench.x:y")
    boot.check_serviceable(settings)


def test_boot_neither_creates_a_missing_database_nor_waits_for_an_unreachable_one(tmp_path):
    with pytest.raises(DatabaseMissing):
        boot.check_serviceable(Settings(database_url=sqlite_url(tmp_path / "x" / "farm.db")))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatabaseUnreachable):
        boot.check_serviceable(Settings(database_url="postgresql://farm@127.0.0.1:1/farm"))


@pytest.mark.parametrize(
    "error",
    [DeviceUnavailable("GPU 0 asked for, but no CUDA device is visible"), DatabaseMissing("no db")],
)
def test_a_process_that_cannot_serve_logs_one_line_and_exits_1(monkeypatch, caplog, error):
    from tasks.app import app

    class Exited(Exception):
        pass

    def exit_now(code):
        raise Exited(code)

    def cannot_start(*_args):
        raise error

    monkeypatch.setattr(boot.os, "_exit", exit_now)
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    monkeypatch.setattr(boot, "start_process", cannot_start)
    monkeypatch.setattr(app, "settings", Settings(), raising=False)
    sender = type("Worker", (), {"hostname": "gpu0@host"})()

    with caplog.at_level(logging.CRITICAL, logger="farm.boot"), pytest.raises(Exited) as exited:
        boot._start_worker_process(sender=sender)

    assert exited.value.args == (1,)
    (record,) = caplog.records
    assert record.getMessage() == f"worker cannot start: {error}"
    assert record.exc_info is None


# --- exit codes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UnsupportedDatabase("x"), guards.EXIT_DATABASE),
        (DatabaseMissing("x"), 5),
        (DatabaseUnreachable("x"), 5),
        (OutputNotWritable("x", OSError(errno.ENOSPC, "full"), "p"), 6),
        (BrokerUnavailable("x"), 3),
        (CatalogError([]), 2),
        (DeviceUnavailable("x"), 1),
        (ValueError("a bug"), None),
        (OSError(errno.EIO, "io"), None),
    ],
)
def test_each_error_a_user_can_fix_has_its_exit_code(error, code):
    assert guards.exit_code_of(error) == code


def test_reported_prints_the_message_alone_and_exits_with_its_code(capsys):
    with pytest.raises(SystemExit) as exited, guards.reported():
        raise DatabaseMissing("no farm database at /x/farm.db; `farm submit` creates it")
    assert exited.value.code == 5
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "no farm database at /x/farm.db; `farm submit` creates it\n"


def test_reported_lets_a_bug_through(capsys):
    with pytest.raises(KeyError), guards.reported():
        raise KeyError("bug")


def test_every_database_error_is_one_exit_code():
    for kind in (UnsupportedDatabase, DatabaseMissing, DatabaseUnreachable):
        assert issubclass(kind, DatabaseError)
    for kind in (DatabaseNotWritable, DatabaseUnusable):
        assert guards.exit_code_of(kind("x")) == guards.EXIT_DATABASE
