"""Start a real ComfyUI server with this pack installed in a temporary base directory (for the
integration tests).

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/venv/bin/python python
        tests/integration/comfyui_server.py

run on its own prints the pack's /object_info entries (what tests/data/simplegvr_object_info.json
records).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "ComfyUI-SimpleGVR"  # what `git clone` of the repository would create in custom_nodes/
# What a user's clone holds and the pack needs at run time (no tests, training code or caches).
PACK_FILES = [
    "__init__.py",
    "nodes",
    "simplegvr_core",
    "workflows",
    "locales",
    "pyproject.toml",
    "requirements.txt",
    "README.md",
    "LICENSE",
]
PROGRESS_TEXT = 3  # server.BinaryEventTypes.TEXT: PromptServer.send_progress_text
OUR_NODES = [
    "SimpleGVRModelLoader",
    "SimpleGVRUltraFlashLoader",
    "SimpleGVRLatentUpsampler",
    "SimpleGVRSampler",
    "SimpleGVRFastDecode",
    "SimpleGVRFlowDegrade",
    "SimpleGVRColourFix",
]
# The combos that list the machine's model files, emptied in the recording.
FILE_COMBOS = {
    "SimpleGVRModelLoader": ["model_name"],
    "SimpleGVRUltraFlashLoader": ["dit_name", "upsampler_name"],
    "SimpleGVRFastDecode": ["decoder_name"],
}
# nodes/runtime.py: the loader's tooltip names the flagged files there
FLAGGED_MARK = "\n\nIn this folder now: "


def comfyui_from_env() -> tuple[Path, Path] | None:
    d, py = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if not d or not py:
        return None
    return Path(d), Path(py)


def install_pack(base: Path) -> Path:
    """Copy the pack into base/custom_nodes/ComfyUI-SimpleGVR as a clone would lay it out."""
    dest = base / "custom_nodes" / PACK_NAME
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in PACK_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI process on 127.0.0.1 with `--cpu` and `--base-directory base`; talks HTTP to it."""

    def __init__(self, comfy_dir: Path, python: Path, base: Path, port: int | None = None):
        self.comfy_dir, self.python, self.base = Path(comfy_dir), Path(python), Path(base)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base / "server.log"
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex

    # --- process ----------------------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> None:
        for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.python),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base),
            "--disable-auto-launch",
            "--preview-method",
            "latent2rgb",
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)  # the pack must import without this checkout on the path
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, cwd=self.comfy_dir, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                self.get("/system_stats", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- HTTP ---------------------------------------------------------------------------------
    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, data: dict, timeout: float = 30) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(data).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, _json(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _json(e.read())

    def queue(self, prompt: dict) -> tuple[int, dict]:
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        """The /history entry of a prompt once it has finished (success or error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                status = h[prompt_id]["status"]
                if status.get("status_str") in ("success", "error"):
                    return h[prompt_id]
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(
            f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def run_watching(self, prompt: dict, timeout: float = 300) -> tuple[list[dict], int]:
        """Queue `prompt` and follow it on the websocket: (its JSON messages, binary preview frames
        received)."""
        messages, previews, _ = self.watch(prompt, timeout)
        return messages, previews

    def watch(
        self, prompt: dict, timeout: float = 300
    ) -> tuple[list[dict], int, dict[str, list[str]]]:
        """Queue `prompt` and follow it on the websocket: (its JSON messages, binary preview frames
        received, the text each node showed under itself: ComfyUI's progress-text messages {node id:
        [texts]})."""
        with WebSocket(
            "127.0.0.1", self.port, "/ws?" + urlencode({"clientId": self.client_id})
        ) as ws:
            status, body = self.queue(prompt)
            if status != 200:
                raise AssertionError(f"POST /prompt returned {status}: {json.dumps(body)[:2000]}")
            messages, previews, texts = [], 0, {}
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                opcode, payload = ws.recv(timeout=max(1.0, deadline - time.monotonic()))
                if opcode == 2:
                    kind = int.from_bytes(payload[:4], "big")
                    if kind == PROGRESS_TEXT:  # [type][len(node id)][node id][text]
                        n = int.from_bytes(payload[4:8], "big")
                        texts.setdefault(payload[8 : 8 + n].decode(), []).append(
                            payload[8 + n :].decode("utf-8")
                        )
                    else:
                        previews += 1
                    continue
                msg = json.loads(payload)
                messages.append(msg)
                if (
                    msg["type"] in ("execution_success", "execution_error", "execution_interrupted")
                    and msg["data"].get("prompt_id") == body["prompt_id"]
                ):
                    return messages, previews, texts
            raise TimeoutError(
                f"no end of prompt {body['prompt_id']} on the websocket within {timeout:.0f} s"
            )

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        status, body = self.queue(prompt)
        if status != 200:
            raise AssertionError(f"POST /prompt returned {status}: {json.dumps(body)[:2000]}")
        return self.wait(body["prompt_id"], timeout)


class WebSocket:
    """Just enough of RFC 6455 to read what ComfyUI's /ws sends (text = JSON events, binary =
    previews)."""

    def __init__(self, host: str, port: int, path: str):
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\n"
                f"Upgrade: websocket\r\n"
                f"Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n"
                f"\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return buf

    def recv(self, timeout: float = 30) -> tuple[int, bytes]:
        """The next data message: (opcode 1 text / 2 binary, payload); control frames are
        skipped."""
        self.sock.settimeout(timeout)
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("websocket closed by the server")
            if opcode in (1, 2):  # ComfyUI sends unfragmented messages
                return opcode, data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _json(body: bytes) -> dict:
    try:
        return json.loads(body) if body.strip() else {}
    except json.JSONDecodeError:
        return {"text": body.decode(errors="replace")}


def execution_error(entry: dict) -> dict | None:
    """The execution_error message of a /history entry, without the (huge) current_inputs."""
    for kind, msg in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return {k: v for k, v in msg.items() if k not in ("current_inputs", "current_outputs")}
    return None


def our_object_info(object_info: dict) -> dict:
    """The pack's nodes from /object_info, with the machine-dependent model list emptied."""
    out = {k: json.loads(json.dumps(object_info[k])) for k in OUR_NODES if k in object_info}
    for node, names in FILE_COMBOS.items():
        for name in names if node in out else ():
            spec = out[node]["input"]["required"][name][1]
            spec["options"] = []
            spec["tooltip"] = spec["tooltip"].split(FLAGGED_MARK)[0]
    for v in out.values():
        v.pop("python_module", None)  # names the install directory
    return out


if __name__ == "__main__":
    found = comfyui_from_env()
    if not found:
        sys.exit("set COMFYUI_DIR and COMFYUI_PYTHON")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        install_pack(base)
        server = stack.enter_context(ComfyServer(*found, base))
        print(json.dumps(our_object_info(server.get("/object_info")), indent=1, ensure_ascii=False))
