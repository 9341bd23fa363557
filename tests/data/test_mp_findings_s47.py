"""What a spawned loader worker gets from the main process (stop 47's review of start methods): image formats a
Pillow plugin registered there (each of those images was counted corrupt under spawn, the macOS default and
Linux's forkserver from Python 3.14), and the command line's one-line warnings."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import io, sys, multiprocessing as mp
    from pathlib import Path
    from PIL import Image, ImageFile

    class KzImageFile(ImageFile.ImageFile):  # a stand-in for a third-party opener (pillow-heif's)
        format, format_description = "KZIMG", "test"

        def _open(self):
            if self.fp.read(5) != b"KZIMG":
                raise SyntaxError("not KZIMG")
            inner = Image.open(io.BytesIO(self.fp.read()))
            inner.load()
            self._inner, self._mode, self._size, self.tile = inner, inner.mode, inner.size, []

        def load(self):
            self.im = self._inner.im
            return Image.Image.load(self)

    def _accept(prefix):
        return prefix[:5] == b"KZIMG"

    if __name__ == "__main__":
        mp.set_start_method("spawn")
        import torch
        import kizuna
        from kizuna.apps.cli import main

        root = Path(sys.argv[1])
        Image.register_open("KZIMG", KzImageFile, _accept)
        (root / "imgs").mkdir()
        for k in range(3):
            b = io.BytesIO()
            Image.new("RGB", (128, 128), (40 * k, 90, 200)).save(b, "PNG")
            (root / "imgs" / f"{k}.png").write_bytes(b"KZIMG" + b.getvalue())
        torch.manual_seed(0)
        kizuna.save_model(kizuna.create_model("ViT-mu-8"), root / "model")
        Image.MAX_IMAGE_PIXELS = 10000  # each image warns (128 x 128 = 16384 pixels)
        sys.exit(main(["embed", "--model", str(root / "model"), "--images", str(root / "imgs"), "--out",
                       str(root / "e.npy"), "--workers", "1", "--no-progress"]))
''')


@pytest.mark.skipif(sys.platform == "win32", reason="the command line's SIGTERM handling")
def test_a_spawned_worker_reads_a_plugins_format_and_warns_in_the_commands_voice(tmp_path):
    (tmp_path / "run.py").write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 3 image embeddings" in done.stdout + done.stderr
    # (in kizuna's words, naming the image: Pillow's own named none, and is not shown)
    assert "0.png: 128 x 128 = 16384 pixels, past Pillow's decompression-bomb limit of 10000" in done.stderr
    assert "kizuna embed: warning: " in done.stderr and "exceeds limit" not in done.stderr
    assert "DecompressionBombWarning" not in done.stderr  # (Python's form: file:line and the category)
