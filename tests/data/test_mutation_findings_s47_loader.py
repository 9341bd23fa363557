"""Mutation findings (stop 47's mutation test of what a spawned loader worker gets from the main process): mutants
that no test killed.

Reference: Python's warnings filters, which a worker forked from the main process inherits (``fork``, Linux's
default before 3.14): a user's ``warnings.filterwarnings("ignore", ...)`` silences the warning in a spawned
worker as it does in a forked one and in the main process."""
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_mp_findings_s47 import SCRIPT  # noqa: E402


@pytest.mark.skipif(sys.platform == "win32", reason="the command line's SIGTERM handling")
def test_a_users_warning_filter_holds_in_a_spawned_worker(tmp_path):
    """Kills _WorkerInit's ``warnings.filters[:] = self.warning_filters`` dropped: the user's filter held in the
    main process only, and each spawned worker printed the warning it ignores."""
    line = "    Image.MAX_IMAGE_PIXELS = 10000"
    assert line in SCRIPT
    script = SCRIPT.replace(line, line + "\n    import warnings\n"
                            "    warnings.filterwarnings('ignore', category=Image.DecompressionBombWarning)")
    (tmp_path / "run.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 3 image embeddings" in done.stdout + done.stderr
    assert "exceeds limit" not in done.stderr, done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="the command line's SIGTERM handling")
def test_a_workers_warning_in_the_commands_voice_is_said_once(tmp_path):
    """Kills _CommandWarnings' once-per-text check dropped: each of the worker's three images printed the same
    line (the main process's handler, kizuna.apps.cli, says a text once). Under a user's "always" filter, which
    the worker takes: Python's default filter says a warning once per place anyway."""
    line = "    Image.MAX_IMAGE_PIXELS = 10000"
    script = SCRIPT.replace(line, line + "\n    import warnings\n    warnings.simplefilter('always')")
    loaded = "        inner.load()\n"  # the plugin says one text for every image (kizuna's bomb warning names each)
    assert loaded in script
    script = script.replace(loaded, loaded + "        import warnings\n"
                            "        warnings.warn('kz plugin: one text for every image')\n")
    (tmp_path / "run.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("kizuna embed: warning: kz plugin: one text for every image") == 1, done.stderr
