"""The example workflows in workflows/: valid UI format, only core ComfyUI v0.22 nodes plus ours,
widget values inside the declared ranges, and the graphs the README describes. No ComfyUI needed:
the node specs are recorded in tests/data (tests/data/README.md says how they were made)."""

import json
from pathlib import Path

import pytest
from comfy_workflows import (
    VIRTUAL_NODES,
    check_ui_format,
    check_value,
    core_node_ids,
    edges,
    inputs_in_order,
    is_widget,
    load_object_info,
    model_files,
    notes_text,
    to_api,
)

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
WAN21, FLOW, PAIRS = (
    "Wan 2.1 T2V 480p to 1080p.json",
    "Flow Degrade preview.json",
    "Model-guided training pairs.json",
)
EXPECTED = {WAN21, FLOW, PAIRS}
OURS = json.loads((REPO / "tests" / "data" / "simplegvr_object_info.json").read_text())
OBJECT_INFO = load_object_info()


def load(name):
    return json.loads((REPO / "workflows" / name).read_text(encoding="utf-8"))


def api(name):
    prompt, problems = to_api(load(name), OBJECT_INFO, files_optional=True)
    assert not problems, problems
    return prompt


def test_the_three_example_workflows_exist():
    assert EXPECTED <= {p.name for p in WORKFLOWS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_valid_ui_format(path):
    wf = json.loads(path.read_text(encoding="utf-8"))
    assert check_ui_format(wf) == []
    # not API format
    assert "prompt" not in wf and not any(
        isinstance(v, dict) and "class_type" in v for v in wf.values()
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_uses_only_core_v022_nodes_and_ours(path):
    core = core_node_ids()
    types = {n["type"] for n in json.loads(path.read_text(encoding="utf-8"))["nodes"]}
    unknown = types - core - set(OURS) - VIRTUAL_NODES
    assert not unknown, (
        f"{path.name} uses nodes that are neither ComfyUI v0.22 core nor SimpleGVR: {unknown}"
    )
    assert types & set(OURS) or path.name == PAIRS  # that one is core-only by design


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_converts_to_an_api_prompt_with_valid_widgets(path):
    prompt, problems = to_api(
        json.loads(path.read_text(encoding="utf-8")), OBJECT_INFO, files_optional=True
    )
    assert problems == []
    assert prompt and all(n["class_type"] in OBJECT_INFO for n in prompt.values())


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_our_nodes_widget_values_are_within_their_declared_ranges(path):
    checked = 0
    for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
        if node["type"] not in OURS:
            continue
        values = iter(node["widgets_values"])
        for name, spec, _ in inputs_in_order(OURS[node["type"]]):
            if not is_widget(spec):
                continue
            value = next(values)
            assert check_value(spec, value, files_optional=True) is None, (
                f"{node['type']}.{name} = {value!r}"
            )
            checked += 1
            if spec[1].get("control_after_generate"):
                assert next(values) in ("fixed", "randomize", "increment", "decrement")
        assert next(values, None) is None, f"{node['type']} has more widget values than widgets"
    assert checked or path.name == PAIRS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_names_the_model_files_it_expects_in_a_note(path):
    wf = json.loads(path.read_text(encoding="utf-8"))
    prompt, _ = to_api(wf, OBJECT_INFO, files_optional=True)
    text = notes_text(wf)
    missing = {f for f in model_files(prompt) if f not in text}
    assert not missing, f"{path.name}: no note names {missing}"


def test_check_value_catches_what_comfyui_would_reject():
    spec = OURS["SimpleGVRLatentUpsampler"]["input"]["required"]["noise_level"]
    assert check_value(spec, 0.4) is None
    assert "above the maximum" in check_value(spec, 1.5)
    assert "not a FLOAT" in check_value(spec, "0.4")
    combo = OURS["SimpleGVRSampler"]["input"]["required"]["sampler"]
    assert "not one of" in check_value(combo, "dpmpp_2m")
    files = OBJECT_INFO["VAELoader"]["input"]["required"]["vae_name"]
    # strict: a live server lists the files
    assert "not one of" in check_value(files, "wan_2.1_vae.safetensors")
    assert check_value(files, "wan_2.1_vae.safetensors", files_optional=True) is None
    assert "not one of" in check_value(files, "wan_2.1_vae", files_optional=True)


def test_a_broken_workflow_is_reported():
    wf = load(WAN21)
    up = next(n for n in wf["nodes"] if n["type"] == "SimpleGVRLatentUpsampler")
    up["widgets_values"][5] = 7.0  # noise_level > 1
    sampler = next(n for n in wf["nodes"] if n["type"] == "SimpleGVRSampler")
    sampler["widgets_values"].append("extra")
    wf["nodes"].append(dict(wf["nodes"][1], id=99, type="WanVideoSampler"))
    _, problems = to_api(wf, OBJECT_INFO, files_optional=True)
    assert any("noise_level" in p and "maximum 1.0" in p for p in problems)
    assert any("SimpleGVRSampler" in p and "left over" in p for p in problems)
    assert any("WanVideoSampler" in p and "unknown node type" in p for p in problems)
    wf["links"][0][4] = 7  # a link whose target slot does not exist
    assert check_ui_format(wf)


# --- the graphs the issue and README describe -----------------------------------------------------
def test_wan21_workflow_is_480p_t2v_then_simplegvr_then_decode_and_save():
    p = api(WAN21)
    by_type = {n["class_type"]: n["inputs"] for n in p.values()}
    assert (
        by_type["EmptyHunyuanLatentVideo"]["width"] == 832
        and by_type["EmptyHunyuanLatentVideo"]["height"] == 480
    )
    assert by_type["UNETLoader"]["unet_name"] == "wan2.1_t2v_1.3B_fp16.safetensors"
    assert by_type["CLIPLoader"]["type"] == "wan"
    up = by_type["SimpleGVRLatentUpsampler"]
    # 1872x1080, aspect kept
    assert (up["resize_by"], up["edge"], up["noise_level"]) == ("short edge", 1080, 0.4)
    assert (
        by_type["SimpleGVRSampler"]["steps"] == 0
        and by_type["SimpleGVRSampler"]["memory"] == "auto"
    )
    e = edges(p)
    for edge in [
        ("KSampler", "SimpleGVRLatentUpsampler", "samples"),
        ("SimpleGVRLatentUpsampler", "SimpleGVRSampler", "samples"),
        ("SimpleGVRModelLoader", "SimpleGVRLatentUpsampler", "model"),
        ("SimpleGVRModelLoader", "SimpleGVRSampler", "model"),
        ("CLIPTextEncode", "SimpleGVRSampler", "positive"),
        ("CLIPTextEncode", "SimpleGVRSampler", "negative"),
        ("SimpleGVRSampler", "VAEDecode", "samples"),
        ("VAEDecode", "SimpleGVRColourFix", "images"),
        ("VAEDecode", "SimpleGVRColourFix", "reference"),
        ("SimpleGVRColourFix", "CreateVideo", "images"),
        ("CreateVideo", "SaveVideo", "video"),
        ("KSampler", "VAEDecode", "samples"),
    ]:
        assert edge in e, edge
    # the Sampler gets the same prompts as the T2V KSampler
    ks = next(k for k, n in p.items() if n["class_type"] == "KSampler")
    smp = next(n for n in p.values() if n["class_type"] == "SimpleGVRSampler")
    assert (
        smp["inputs"]["positive"] == p[ks]["inputs"]["positive"]
        and smp["inputs"]["negative"] == p[ks]["inputs"]["negative"]
    )


def test_model_guided_workflow_is_sdedit_at_480p_with_core_nodes_only():
    p = api(PAIRS)
    assert all(n["class_type"] not in OURS for n in p.values())
    ks = next(n for n in p.values() if n["class_type"] == "KSampler")["inputs"]
    assert ks["denoise"] == 0.35
    scales = {
        (n["inputs"]["width"], n["inputs"]["height"])
        for n in p.values()
        if n["class_type"] == "ImageScale"
    }
    assert (832, 480) in scales
    e = edges(p)
    for edge in [
        ("LoadVideo", "GetVideoComponents", "video"),
        ("GetVideoComponents", "ImageScale", "image"),
        ("ImageScale", "VAEEncode", "pixels"),
        ("VAEEncode", "KSampler", "latent_image"),
        ("KSampler", "SaveLatent", "samples"),
        ("ModelSamplingSD3", "KSampler", "model"),
    ]:
        assert edge in e, edge


def test_flow_degrade_workflow_loads_degrades_and_saves():
    p = api(FLOW)
    e = edges(p)
    for edge in [
        ("LoadVideo", "GetVideoComponents", "video"),
        ("GetVideoComponents", "SimpleGVRFlowDegrade", "images"),
        ("SimpleGVRFlowDegrade", "CreateVideo", "images"),
        ("CreateVideo", "SaveVideo", "video"),
        ("SimpleGVRFlowDegrade", "PreviewImage", "images"),
    ]:
        assert edge in e, edge


# --- the recorded node specs ----------------------------------------------------------------------
def test_recorded_specs_cover_our_nodes_with_tooltips_and_category():
    assert set(OURS) == {
        "SimpleGVRModelLoader",
        "SimpleGVRUltraFlashLoader",
        "SimpleGVRLatentUpsampler",
        "SimpleGVRSampler",
        "SimpleGVRFastDecode",
        "SimpleGVRFlowDegrade",
        "SimpleGVRColourFix",
    }
    for node_id, info in OURS.items():
        assert info["category"] == "SimpleGVR"
        for name, spec, _ in inputs_in_order(info):
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert OURS["SimpleGVRModelLoader"]["output"] == ["SIMPLEGVR_MODEL"]
    assert OURS["SimpleGVRLatentUpsampler"]["input"]["required"]["width"][1]["default"] == 1920
    assert OURS["SimpleGVRLatentUpsampler"]["input"]["required"]["height"][1]["default"] == 1080
    # auto
    assert (
        OURS["SimpleGVRLatentUpsampler"]["input"]["required"]["noise_level"][1]["default"] == -1.0
    )
    assert (
        OURS["SimpleGVRLatentUpsampler"]["input"]["required"]["resize_by"][1]["default"]
        == "short edge"
    )
    assert OURS["SimpleGVRLatentUpsampler"]["input"]["required"]["edge"][1]["default"] == 1080
    assert OURS["SimpleGVRSampler"]["input"]["required"]["memory"][1]["default"] == "auto"
    assert OURS["SimpleGVRSampler"]["input"]["required"]["colour_fix"][1]["options"] == [
        "none",
        "latent AdaIN",
    ]
    # auto: the checkpoint's steps
    assert OURS["SimpleGVRSampler"]["input"]["required"]["steps"][1]["default"] == 0


def test_recorded_core_nodes_are_comfyui_v022():
    data = json.loads((REPO / "tests" / "data" / "comfyui_v0.22_core_nodes.json").read_text())
    assert data["comfyui_version"] == "0.22.0" and len(data["node_ids"]) == 733
    assert {"KSampler", "VAEDecode", "SaveLatent", "LoadLatent", "CreateVideo", "SaveVideo"} <= set(
        data["node_ids"]
    )
    assert set(data["nodes"]) <= set(data["node_ids"])
    assert not set(OURS) & set(data["node_ids"])  # our ids do not clash with core ones


# --- the other families' workflows (issue 17) -----------------------------------------------------
WAN22, COGVIDEOX = "Wan 2.2 TI2V-5B 704p to 1080p.json", "CogVideoX 5B 480p to 1080p.json"
FAMILY_WORKFLOWS = {WAN22: "wan22", COGVIDEOX: "cogvideox_2b"}


def test_the_family_workflows_exist():
    assert set(FAMILY_WORKFLOWS) <= {p.name for p in WORKFLOWS}


def _simplegvr_chain_edges(t2v_sampler):
    """Issue 16's chain, as in the Wan 2.1 workflow: the T2V latent -> Latent Upsampler -> Sampler
    -> VAE Decode -> Colour Fix (the decoded LR frames as the reference) -> Create Video -> Save
    Video."""
    return [
        (t2v_sampler, "SimpleGVRLatentUpsampler", "samples"),
        ("SimpleGVRLatentUpsampler", "SimpleGVRSampler", "samples"),
        ("SimpleGVRModelLoader", "SimpleGVRLatentUpsampler", "model"),
        ("SimpleGVRModelLoader", "SimpleGVRSampler", "model"),
        ("CLIPTextEncode", "SimpleGVRSampler", "positive"),
        ("CLIPTextEncode", "SimpleGVRSampler", "negative"),
        ("SimpleGVRSampler", "VAEDecode", "samples"),
        (t2v_sampler, "VAEDecode", "samples"),
        ("VAEDecode", "SimpleGVRColourFix", "images"),
        ("VAEDecode", "SimpleGVRColourFix", "reference"),
        ("SimpleGVRColourFix", "CreateVideo", "images"),
        ("CreateVideo", "SaveVideo", "video"),
    ]


def _check_simplegvr_half(p, t2v_sampler):
    """Issue 16's settings: short edge 1080 (the aspect ratio kept), memory auto, the wavelet Colour
    Fix against the decoded LR frames (so no latent AdaIN on top), and the reference decoded from
    the T2V latent itself."""
    by_type = {n["class_type"]: n["inputs"] for n in p.values()}
    up, smp = by_type["SimpleGVRLatentUpsampler"], by_type["SimpleGVRSampler"]
    assert (up["resize_by"], up["edge"], up["noise_level"]) == ("short edge", 1080, 0.4)
    assert (smp["memory"], smp["colour_fix"], smp["chunk_frames"], smp["tile_size"]) == (
        "auto",
        "none",
        0,
        0,
    )
    assert smp["steps"] == 0 and by_type["SimpleGVRColourFix"]["method"] == "wavelet"
    t2v = next(k for k, n in p.items() if n["class_type"] == t2v_sampler)
    fix = by_type["SimpleGVRColourFix"]
    assert p[fix["reference"][0]]["inputs"]["samples"] == [t2v, 0]
    assert p[p[fix["images"][0]]["inputs"]["samples"][0]]["class_type"] == "SimpleGVRSampler"
    return up


def test_wan22_workflow_is_the_5b_at_its_own_704p_then_simplegvr_to_1080p():
    from simplegvr_core import SimpleGVR
    from simplegvr_core.pipeline import aspect_warning, target_size

    p = api(WAN22)
    by_type = {n["class_type"]: n["inputs"] for n in p.values()}
    lat = by_type["Wan22ImageToVideoLatent"]
    # TI2V-5B's supported size, 121 frames
    assert (lat["width"], lat["height"], lat["length"]) == (1280, 704, 121)
    assert by_type["UNETLoader"]["unet_name"] == "wan2.2_ti2v_5B_fp16.safetensors"
    assert by_type["VAELoader"]["vae_name"] == "wan2.2_vae.safetensors"
    assert by_type["CLIPLoader"]["type"] == "wan"
    assert by_type["CreateVideo"]["fps"] == 24
    up = _check_simplegvr_half(p, "KSampler")
    # what the Upsampler makes of it, with the real config (on meta): the /16 latent 44x80 -> 68x123
    # = 1968x1088
    m = SimpleGVR.from_config("wan2.2-ti2v-5b", device="meta")
    hr = target_size(m, (704 // 16, 1280 // 16), short_edge=up["edge"])
    assert hr == (68, 123) and aspect_warning(m, (44, 80), hr) is None
    assert f"1280x704 -> {hr[1] * 16}x{hr[0] * 16}" in notes_text(load(WAN22))
    e = edges(p)
    for edge in _simplegvr_chain_edges("KSampler") + [
        ("VAELoader", "Wan22ImageToVideoLatent", "vae"),
        ("Wan22ImageToVideoLatent", "KSampler", "latent_image"),
        ("ModelSamplingSD3", "KSampler", "model"),
    ]:
        assert edge in e, edge
    ks = next(k for k, n in p.items() if n["class_type"] == "KSampler")
    smp = next(n for n in p.values() if n["class_type"] == "SimpleGVRSampler")
    assert (
        smp["inputs"]["positive"] == p[ks]["inputs"]["positive"]
        and smp["inputs"]["negative"] == p[ks]["inputs"]["negative"]
    )


def test_cogvideox_workflow_is_the_5b_at_720x480_with_cogvideox_ddim_then_simplegvr_to_1080p():
    from simplegvr_core import SimpleGVR
    from simplegvr_core.pipeline import aspect_warning, target_size

    p = api(COGVIDEOX)
    by_type = {n["class_type"]: n["inputs"] for n in p.values()}
    lat = by_type["EmptyHunyuanLatentVideo"]
    assert (lat["width"], lat["height"], lat["length"]) == (720, 480, 49)
    # an odd latent count: CogVideoX's VAE decodes it to 49 frames
    assert ((lat["length"] - 1) // 4 + 1) % 2 == 1
    assert (
        by_type["CLIPLoader"]["type"] == "cogvideox"
        and by_type["CLIPLoader"]["clip_name"] == "t5xxl_fp16.safetensors"
    )
    assert by_type["VAELoader"]["vae_name"] == "cogvideox_vae.safetensors"
    assert by_type["CFGGuider"]["cfg"] == 6 and by_type["BasicScheduler"]["steps"] == 50
    assert by_type["CreateVideo"]["fps"] == 8
    up = _check_simplegvr_half(p, "SamplerCustomAdvanced")
    m = SimpleGVR.from_config("cogvideox-1.3b", device="meta")
    hr = target_size(m, (480 // 8, 720 // 8), short_edge=up["edge"])
    # 1624x1080: 202.5 rounds up on the /8 grid
    assert hr == (135, 203) and aspect_warning(m, (60, 90), hr) is None
    assert f"720x480 -> {hr[1] * 8}x{hr[0] * 8}" in notes_text(load(COGVIDEOX))
    e = edges(p)
    for edge in _simplegvr_chain_edges("SamplerCustomAdvanced") + [
        ("VOIDSampler", "SamplerCustomAdvanced", "sampler"),
        ("CFGGuider", "SamplerCustomAdvanced", "guider"),
        ("BasicScheduler", "SamplerCustomAdvanced", "sigmas"),
        ("RandomNoise", "SamplerCustomAdvanced", "noise"),
        ("EmptyHunyuanLatentVideo", "SamplerCustomAdvanced", "latent_image"),
        ("UNETLoader", "CFGGuider", "model"),
    ]:
        assert edge in e, edge
    sca = next(k for k, n in p.items() if n["class_type"] == "SamplerCustomAdvanced")
    assert up["samples"] == [sca, 0]  # its 'output' (raw VAE scale), not 'denoised_output'
    guider = next(n for n in p.values() if n["class_type"] == "CFGGuider")
    smp = next(n for n in p.values() if n["class_type"] == "SimpleGVRSampler")
    assert (
        smp["inputs"]["positive"] == guider["inputs"]["positive"]
        and smp["inputs"]["negative"] == guider["inputs"]["negative"]
    )


@pytest.mark.parametrize("name", sorted(FAMILY_WORKFLOWS))
def test_family_workflow_names_its_files_with_download_urls_or_the_command_that_makes_them(name):
    """A public file: its properties.models entry (the missing-models panel's Download) is a direct
    URL the note gives too. A file the user makes (the SimpleGVR checkpoint, the converted CogVideoX
    transformer): its entry points to the README, and the note gives the command that writes it."""
    import re

    from workflow_lint import LOADER_DIRECTORIES, SIMPLEGVR_MODEL_DOC

    from simplegvr_core import get_config

    wf = load(name)
    note = notes_text(wf)
    commands = re.findall(r"`(simplegvr (?:import-wan|convert-cogvideox) [^`]*)`", note)
    for node in wf["nodes"]:
        if node["type"] not in LOADER_DIRECTORIES:
            continue
        file = node["widgets_values"][0]
        entries = node["properties"]["models"]
        assert [(m["name"], m["directory"]) for m in entries] == [
            (file, LOADER_DIRECTORIES[node["type"]])
        ]
        url = entries[0]["url"]
        assert f"`{file}`" in note, f"{name}: the note does not name {file}"
        if url == SIMPLEGVR_MODEL_DOC:  # made here: the note gives the command
            assert any(re.search(r"--out \S*" + re.escape(file) + "$", c) for c in commands), (
                file,
                commands,
            )
        else:
            assert url.startswith("https://huggingface.co/") and "/resolve/" in url, url
            assert url.split("?")[0].endswith("/" + file) and url in note, (
                f"{name}: the note does not give {url}"
            )
    # the note's SimpleGVR initialisation is a checkpoint of this workflow's latent family
    config = re.search(r"--config ([\w.-]+)", note).group(1)
    assert get_config(config).latent_format == FAMILY_WORKFLOWS[name]


# --- Ultra Flash (issue 31) -----------------------------------------------------------------------
UF_ONE_STEP, UF_HIRES = (
    "Wan 2.1 480p to 1K Ultra Flash one step.json",
    "Wan 2.1 480p to 1K Ultra Flash hires fix.json",
)
UF_FILES = {"sr_dit_sparse.pth", "latent_upsampler.pth", "tiny_decoder.pth"}


def _ultraflash_half(p):
    """The Wan 2.1 T2V half as in the Wan 2.1 workflow (1.3B at 832x480, umt5-xxl), then Ultra
    Flash's upsampler at its native 2x with the checkpoint's noise level (auto)."""
    by_type = {n["class_type"]: n["inputs"] for n in p.values()}
    lat = by_type["EmptyHunyuanLatentVideo"]
    assert (lat["width"], lat["height"]) == (832, 480)
    assert by_type["UNETLoader"]["unet_name"] == "wan2.1_t2v_1.3B_fp16.safetensors"
    assert by_type["CLIPLoader"]["clip_name"] == "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    loader = by_type["SimpleGVRUltraFlashLoader"]
    assert (loader["dit_name"], loader["upsampler_name"], loader["dtype"]) == (
        "sr_dit_sparse.pth",
        "latent_upsampler.pth",
        "auto",
    )
    up = by_type["SimpleGVRLatentUpsampler"]
    # 2x, noise auto (0 for Ultra Flash)
    assert up["resize_by"] == "native" and up["noise_level"] == -1.0
    ks = next(
        k for k, n in p.items() if n["class_type"] == "KSampler" and n["inputs"]["denoise"] == 1
    )
    assert up["samples"] == [ks, 0]
    return by_type, lat


def test_ultraflash_one_step_workflow_is_wan21_480p_then_ultraflash_at_auto_then_fast_decode():
    p = api(UF_ONE_STEP)
    by_type, lat = _ultraflash_half(p)
    smp = by_type["SimpleGVRSampler"]
    # auto: 1, 1
    assert (smp["steps"], smp["cfg"], smp["memory"], smp["colour_fix"]) == (0, 0.0, "auto", "none")
    assert by_type["SimpleGVRFastDecode"]["decoder_name"] == "tiny_decoder.pth"
    latent_frames = (lat["length"] - 1) // 4 + 1
    assert (lat["length"], latent_frames) == (81, 21)  # Ultra Flash's own clip: groups 6, 6, 6, 3
    assert "VAELoader" not in by_type  # the tiny decoder decodes; no Wan VAE to download
    e = edges(p)
    for edge in [
        ("KSampler", "SimpleGVRLatentUpsampler", "samples"),
        ("SimpleGVRUltraFlashLoader", "SimpleGVRLatentUpsampler", "model"),
        ("SimpleGVRUltraFlashLoader", "SimpleGVRSampler", "model"),
        ("SimpleGVRLatentUpsampler", "SimpleGVRSampler", "samples"),
        ("CLIPTextEncode", "SimpleGVRSampler", "positive"),
        ("CLIPTextEncode", "SimpleGVRSampler", "negative"),
        ("SimpleGVRSampler", "SimpleGVRFastDecode", "samples"),
        ("SimpleGVRFastDecode", "CreateVideo", "images"),
        ("CreateVideo", "SaveVideo", "video"),
    ]:
        assert edge in e, edge
    up = next(k for k, n in p.items() if n["class_type"] == "SimpleGVRLatentUpsampler")
    assert next(n for n in p.values() if n["class_type"] == "SimpleGVRSampler")["inputs"][
        "samples"
    ] == [up, 0]


def test_ultraflash_hires_fix_workflow_redenoises_the_hr_latent_with_the_wan_model():
    p = api(UF_HIRES)
    by_type, _ = _ultraflash_half(p)
    up = next(k for k, n in p.items() if n["class_type"] == "SimpleGVRLatentUpsampler")
    fix = next(
        n["inputs"]
        for n in p.values()
        if n["class_type"] == "KSampler" and n["inputs"]["latent_image"][0] == up
    )
    assert fix["latent_image"] == [up, 1]  # the hr_latent output, not the Sampler's LATENT
    assert 0 < fix["denoise"] <= 0.5 and fix["steps"] <= 12  # a short re-denoise
    t2v = next(
        n["inputs"]
        for n in p.values()
        if n["class_type"] == "KSampler" and n["inputs"]["denoise"] == 1
    )
    assert (
        fix["model"] == t2v["model"]
        and fix["positive"] == t2v["positive"]
        and fix["negative"] == t2v["negative"]
    )
    assert (
        "SimpleGVRSampler" not in by_type
        and by_type["VAELoader"]["vae_name"] == "wan_2.1_vae.safetensors"
    )
    e = edges(p)
    for edge in [
        ("KSampler", "VAEDecode", "samples"),
        ("VAELoader", "VAEDecode", "vae"),
        ("VAEDecode", "CreateVideo", "images"),
        ("CreateVideo", "SaveVideo", "video"),
    ]:
        assert edge in e, edge


@pytest.mark.parametrize("name", [UF_ONE_STEP, UF_HIRES])
def test_ultraflash_workflows_download_their_three_files_from_the_public_repository(name):
    """Every file of these workflows is public: its properties.models entry is a direct download
    (Ultra Flash's from huggingface.co/xin1u/UltraFlash, Wan's as in the Wan 2.1 workflow), and the
    note names each file."""
    from workflow_lint import PUBLISHED_SIMPLEGVR

    wf = load(name)
    entries = {
        m["name"]: m for n in wf["nodes"] for m in (n.get("properties") or {}).get("models", [])
    }
    prompt, _ = to_api(wf, OBJECT_INFO, files_optional=True)
    assert set(entries) == model_files(prompt)
    for f in UF_FILES & set(entries):
        assert (
            entries[f]["url"]
            == PUBLISHED_SIMPLEGVR[f]
            == f"https://huggingface.co/xin1u/UltraFlash/resolve/main/{f}"
        )
        assert entries[f]["directory"] == "simplegvr"
    wan = {
        m["name"]: m["url"]
        for n in load(WAN21)["nodes"]
        for m in (n.get("properties") or {}).get("models", [])
    }
    for f in set(entries) - UF_FILES:
        assert entries[f]["url"] == wan[f]  # the same downloads the Wan 2.1 workflow lists
    assert "huggingface.co/xin1u/UltraFlash" in notes_text(wf)


def test_the_readme_describes_every_workflow():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for path in WORKFLOWS:
        assert f"`{path.name}`" in readme, f"README does not describe {path.name}"
