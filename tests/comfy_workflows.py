"""Check ComfyUI UI-format workflows and convert them to API prompts with an `/object_info` (no
ComfyUI needed).

The conversion follows the frontend's graphToPrompt (and comfy-cli's `comfy run --workflow`):
frontend-only nodes (notes, reroutes) drop out; `widgets_values` fill the widget inputs in schema
order, skipping the control_after_generate value after a seed and the upload-button value after a
file combo; links become `[source_id, slot]`. Unlike those, it is strict: it returns every problem
instead of skipping a node.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data"
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}  # exist only in the frontend
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "upload")
MUTED, BYPASSED = 2, 4
# Combo values that name a file of the machine (models, inputs): a recorded /object_info lists none
# of them.
FILE_SUFFIXES = (
    ".safetensors",
    ".sft",
    ".ckpt",
    ".pt",
    ".pth",
    ".bin",
    ".gguf",
    ".mp4",
    ".webm",
    ".mov",
    ".mkv",
    ".latent",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
)


def load_object_info() -> dict:
    """ComfyUI v0.22's recorded core nodes (tests/data) plus this pack's recorded nodes."""
    core = json.loads((DATA / "comfyui_v0.22_core_nodes.json").read_text())
    ours = json.loads((DATA / "simplegvr_object_info.json").read_text())
    info = dict(core["nodes"])
    info.update(ours)
    return info


def core_node_ids() -> set[str]:
    return set(json.loads((DATA / "comfyui_v0.22_core_nodes.json").read_text())["node_ids"])


# --- input specs -------------------------------------------------------------------------------
def spec_type(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def spec_opts(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec) -> list:
    return spec[0] if isinstance(spec[0], list) else spec_opts(spec).get("options", [])


def is_widget(spec) -> bool:
    return spec_type(spec) in WIDGET_TYPES and not spec_opts(spec).get("forceInput")


def inputs_in_order(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, required) of a node's visible inputs, in the order the frontend creates them."""
    out = []
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        order = info.get("input_order", {}).get(section, list(specs))
        out += [(name, specs[name], section == "required") for name in order if name in specs]
    return out


def check_value(spec, value, files_optional: bool = False) -> str | None:
    """Why `value` is not valid for a widget `spec` (None when it is). files_optional: accept a file
    name in a combo that does not list it (a recorded /object_info has the file lists of the machine
    that made it)."""
    t, o = spec_type(spec), spec_opts(spec)
    if t == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{value!r} is not an INT"
    elif t == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{value!r} is not a FLOAT"
    elif t == "BOOLEAN":
        if not isinstance(value, bool):
            return f"{value!r} is not a BOOLEAN"
    elif t == "STRING":
        if not isinstance(value, str):
            return f"{value!r} is not a STRING"
    elif t == "COMBO":
        options = combo_options(spec)
        if value in options or (
            files_optional and isinstance(value, str) and value.lower().endswith(FILE_SUFFIXES)
        ):
            return None
        return f"{value!r} is not one of {options}"
        return None
    if t in ("INT", "FLOAT"):
        if "min" in o and value < o["min"]:
            return f"{value!r} is below the minimum {o['min']}"
        if "max" in o and value > o["max"]:
            return f"{value!r} is above the maximum {o['max']}"
    return None


# --- UI format --------------------------------------------------------------------------------
def check_ui_format(wf) -> list[str]:
    """Structural problems of a litegraph 0.4 UI-format workflow (the format ComfyUI saves and
    loads)."""
    problems = []
    if not isinstance(wf, dict):
        return ["the workflow is not a JSON object"]
    for key, typ in (
        ("nodes", list),
        ("links", list),
        ("last_node_id", int),
        ("last_link_id", int),
        ("version", (int, float)),
    ):
        if not isinstance(wf.get(key), typ):
            problems.append(f"top-level '{key}' is missing or not a {typ}")
    if problems:
        return problems
    nodes = {}
    for n in wf["nodes"]:
        nid = n.get("id")
        where = f"node {nid} ({n.get('type')})"
        if not isinstance(nid, int) or nid in nodes:
            problems.append(f"{where}: id must be a unique int")
            continue
        nodes[nid] = n
        if not isinstance(n.get("type"), str) or not n["type"]:
            problems.append(f"{where}: no type")
        if not (
            isinstance(n.get("pos"), list)
            and len(n["pos"]) == 2
            and all(isinstance(v, (int, float)) for v in n["pos"])
        ):
            problems.append(f"{where}: pos must be [x, y]")
        if not (isinstance(n.get("size"), list) and len(n["size"]) == 2):
            problems.append(f"{where}: size must be [w, h]")
        if not isinstance(n.get("mode", 0), int) or not isinstance(n.get("order", 0), int):
            problems.append(f"{where}: mode and order must be ints")
        if not isinstance(n.get("widgets_values", []), list):
            problems.append(f"{where}: widgets_values must be a list")
        for i in n.get("inputs", []):
            if not isinstance(i, dict) or not {"name", "type", "link"} <= set(i):
                problems.append(f"{where}: input {i!r} needs name, type and link")
        for o in n.get("outputs", []):
            if not isinstance(o, dict) or not {"name", "type"} <= set(o):
                problems.append(f"{where}: output {o!r} needs name and type")
    if nodes and wf["last_node_id"] < max(nodes):
        problems.append(f"last_node_id {wf['last_node_id']} < the largest node id {max(nodes)}")
    link_ids = set()
    for link in wf["links"]:
        if not (isinstance(link, list) and len(link) == 6):
            problems.append(
                f"link {link!r}: expected [id, from_node, from_slot, to_node, to_slot, type]"
            )
            continue
        lid, a, a_slot, b, b_slot, typ = link
        if lid in link_ids:
            problems.append(f"link {lid}: duplicate id")
        link_ids.add(lid)
        if a not in nodes or b not in nodes:
            problems.append(f"link {lid}: node {a} or {b} does not exist")
            continue
        outs, ins = nodes[a].get("outputs", []), nodes[b].get("inputs", [])
        if not (0 <= a_slot < len(outs)) or lid not in (outs[a_slot].get("links") or []):
            problems.append(f"link {lid}: output slot {a_slot} of node {a} does not list it")
        if not (0 <= b_slot < len(ins)) or ins[b_slot].get("link") != lid:
            problems.append(
                f"link {lid}: input slot {b_slot} of node {b} does not point back to it"
            )
        elif typ != ins[b_slot].get("type") and "*" not in (typ, ins[b_slot].get("type")):
            problems.append(
                f"link {lid}: type {typ} does not match input type {ins[b_slot].get('type')}"
            )
    if link_ids and wf["last_link_id"] < max(link_ids):
        problems.append(f"last_link_id {wf['last_link_id']} < the largest link id {max(link_ids)}")
    for n in nodes.values():
        for i in n.get("inputs", []):
            if isinstance(i, dict) and i.get("link") is not None and i["link"] not in link_ids:
                problems.append(
                    f"node {n['id']}: input {i.get('name')} points to missing link {i['link']}"
                )
    return problems


# --- conversion ---------------------------------------------------------------------------------
def to_api(wf: dict, object_info: dict, files_optional: bool = False) -> tuple[dict, list[str]]:
    """The API prompt of a UI workflow and the problems found: unknown nodes, widget values that do
    not fit their inputs, unconnected required inputs, links between mismatched types.
    files_optional: see check_value (True with the recorded specs, False against a live server that
    has the files)."""
    problems: list[str] = []
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {link[0]: link for link in wf["links"]}
    prompt: dict[str, dict] = {}
    for n in wf["nodes"]:
        typ, where = n["type"], f"node {n['id']} ({n['type']})"
        if typ in VIRTUAL_NODES or n.get("mode", 0) == MUTED:
            continue
        if n.get("mode", 0) == BYPASSED:
            problems.append(f"{where}: bypassed nodes are not supported here")
            continue
        info = object_info.get(typ)
        if info is None:
            problems.append(f"{where}: unknown node type")
            continue
        linked = {
            i["name"]: links.get(i["link"])
            for i in n.get("inputs", [])
            if i.get("link") is not None
        }
        values = list(n.get("widgets_values") or [])
        k = 0
        inputs: dict = {}
        for name, spec, required in inputs_in_order(info):
            if is_widget(spec):
                if k >= len(values):
                    problems.append(f"{where}: no widget value for '{name}'")
                    continue
                value = values[k]
                k += 1
                o = spec_opts(spec)
                if o.get("control_after_generate"):
                    if k < len(values) and values[k] in CONTROL_VALUES:
                        k += 1
                    else:
                        problems.append(
                            f"{where}: '{name}' should be followed by a "
                            f"control_after_generate value"
                        )
                if (
                    any(o.get(flag) for flag in UPLOAD_FLAGS)
                    and k < len(values)
                    and values[k] in ("image", "video", "audio")
                ):
                    k += 1  # the upload button's own widget
                if name not in linked:
                    why = check_value(spec, value, files_optional)
                    if why:
                        problems.append(f"{where}: widget '{name}': {why}")
                    inputs[name] = value
            if name in linked:
                link = linked[name]
                if link is None:
                    problems.append(f"{where}: input '{name}' points to a missing link")
                    continue
                _, src, slot, _, _, _ = link
                src_node = nodes.get(src)
                src_info = object_info.get(src_node["type"]) if src_node else None
                if src_info is None:
                    problems.append(
                        f"{where}: input '{name}' comes from node {src}, which does not run"
                    )
                    continue
                out_type, in_type = src_info["output"][slot], spec_type(spec)
                if (
                    out_type != in_type
                    and "*" not in (out_type, in_type)
                    and not (in_type in WIDGET_TYPES and out_type == in_type)
                ):
                    problems.append(
                        f"{where}: input '{name}' ({in_type}) is fed a {out_type} by node {src}"
                    )
                inputs[name] = [str(src), slot]
            elif required and not is_widget(spec):
                problems.append(f"{where}: required input '{name}' is not connected")
        if k != len(values):
            problems.append(f"{where}: {len(values) - k} widget values left over ({values[k:]!r})")
        prompt[str(n["id"])] = {
            "class_type": typ,
            "inputs": inputs,
            "_meta": {"title": n.get("title", typ)},
        }
    return prompt, problems


def notes_text(wf: dict) -> str:
    """All text of a workflow's note nodes."""
    return "\n".join(
        str(v)
        for n in wf["nodes"]
        if n["type"] in ("Note", "MarkdownNote")
        for v in n.get("widgets_values", [])
    )


def model_files(prompt: dict) -> set[str]:
    """The model file names a prompt's loader nodes expect (widget values that name a
    .safetensors/.ckpt/... file)."""
    return {
        v
        for node in prompt.values()
        for v in node["inputs"].values()
        if isinstance(v, str)
        and v.endswith((".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".gguf"))
    }


def edges(prompt: dict) -> set[tuple[str, str, str]]:
    """(source class, target class, target input) of every link of an API prompt."""
    return {
        (prompt[v[0]]["class_type"], node["class_type"], name)
        for node in prompt.values()
        for name, v in node["inputs"].items()
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in prompt
    }
