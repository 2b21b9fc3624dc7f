"""Small files that decode to gigabytes: every kind is decoded within a memory cap, alone and three at a time.

Each case runs ``read_image`` in a child process whose address space is capped at its size after start-up plus
:data:`CAP_MIB`; an allocation beyond it fails there with MemoryError, which the test reports.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hostile_files import CASES, encoded

CAP_MIB = 400  # the bar is +500 MB of peak RSS per request, alone or three at a time

CHILD = f"""
import resource, sys, threading
from dermxai.inference.inputs import InvalidImage, read_image
data = open(sys.argv[1], "rb").read()
copies = int(sys.argv[2])
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
limit = vm + {CAP_MIB} * 2**20 + copies * 16 * 2**20  # each extra thread's stack
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
answers = []
def one():
    try:
        answers.append("ok %dx%d" % read_image(data).size)
    except InvalidImage as error:
        answers.append("refused " + error.reason)
    except MemoryError:
        answers.append("MemoryError")
threads = [threading.Thread(target=one) for _ in range(copies)]
for t in threads: t.start()
for t in threads: t.join()
print(";".join(sorted(set(answers))))
"""


@pytest.mark.parametrize("copies", [1, 3], ids=["alone", "three at a time"])
@pytest.mark.parametrize("case", list(CASES))
def test_decoding_stays_within_the_memory_cap(tmp_path_factory, case, copies):
    make, expected = CASES[case]
    path = tmp_path_factory.getbasetemp() / f"hostile_{list(CASES).index(case)}.bin"
    if not path.is_file():
        path.write_bytes(make())
    assert path.stat().st_size < 3 * 2**20  # small files, all of them
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}  # per-thread malloc arenas reserve address space, not memory
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(copies)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    ("side", "most_at_once"), [(2400, 1), (200, 3)], ids=["large: one at a time", "small: side by side"]
)
def test_large_decodes_take_turns(monkeypatch, side, most_at_once):
    """Three threads decode at once; only decodes above LARGE_DECODE_BYTES are serialised."""
    import threading
    import time

    from PIL import Image, ImageFile

    from dermxai.inference import inputs

    data = encoded(Image.new("RGBA", (side, side)), "PNG")
    assert (side * side * 4 > inputs.LARGE_DECODE_BYTES) == (most_at_once == 1)
    running, peak, lock, real_load = [0], [0], threading.Lock(), ImageFile.ImageFile.load

    def counted_load(self):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        try:
            return real_load(self)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted_load)
    threads = [threading.Thread(target=inputs.read_image, args=(data,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == most_at_once
